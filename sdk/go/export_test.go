package limitr

import "time"

// WithRetryTiming sets the backoff of cloud mode's retries and stream reconnects, so
// tests of repeated failures run quickly.
func WithRetryTiming(base, cap time.Duration) CloudOption {
	return func(c *cloudConfig) { c.backoffBase, c.backoffCap = base, cap }
}
