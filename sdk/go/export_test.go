package limitr

import "time"

// WithRetryTiming sets the backoff of cloud mode's retries and stream reconnects, so
// tests of repeated failures run quickly.
func WithRetryTiming(base, cap time.Duration) CloudOption {
	return func(c *cloudConfig) { c.backoffBase, c.backoffCap = base, cap }
}

// SpilledHeldInMemory counts the records spilled batches still hold in memory (their
// files hold them).
func SpilledHeldInMemory(p *Policy) int {
	c := p.cloud
	c.umu.Lock()
	defer c.umu.Unlock()
	n := 0
	for _, b := range c.queue {
		if b.file != "" && !b.sending {
			n += len(b.body.Deltas) + len(b.body.GrantDraws) + len(b.body.Events) + len(b.deltas)
		}
	}
	return n
}
