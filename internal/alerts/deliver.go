package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/store"
)

// Backoff bounds: the first retry after about RetryBase, doubling, at most an hour
// apart, with jitter so a destination coming back is not hit by every delivery at once.
const (
	defaultRetryBase = 5 * time.Second
	maxRetryDelay    = time.Hour
	sendTimeout      = 30 * time.Second
)

// Prober is a channel that can tell whether an earlier attempt got through.
type Prober interface {
	Delivered(ctx context.Context, deliveryID string, since time.Time) (bool, error)
}

// AddWorkers registers the delivery worker and the rescue of deliveries left in doubt.
func (s *Service) AddWorkers(workers *river.Workers) {
	river.AddWorker(workers, &deliverWorker{s: s})
	s.addRescueWorker(workers)
}

type deliverWorker struct {
	river.WorkerDefaults[DeliverArgs]
	s *Service
}

// Timeout bounds one attempt; the send itself is bounded by sendTimeout.
func (w *deliverWorker) Timeout(*river.Job[DeliverArgs]) time.Duration { return 2 * time.Minute }

// Work makes one attempt. The attempt is recorded as under way (status sending) and
// committed before anything is sent, so a crash mid-send leaves a trace: the next run
// finds the delivery still sending, asks the destination whether the message arrived
// where it can (Slack with a bot token), and sends again only if it did not. Email
// and webhooks are sent again with the same Message-ID or webhook-id, which receivers
// deduplicate on.
func (w *deliverWorker) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	s := w.s
	att, err := s.claim(ctx, job.Args.DeliveryID)
	if err != nil || att == nil {
		return err // nil att: delivered, dead or gone; nothing to do
	}
	if att.expired {
		return river.JobCancel(s.finish(ctx, att, outcomeDead, 0, "gave up after "+s.cfg.MaxAge.String()+" of retries"))
	}
	sender, msg, err := s.prepare(att)
	if err != nil {
		return river.JobCancel(s.finish(ctx, att, outcomeDead, 0, err.Error()))
	}
	sendCtx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if att.inDoubtSince != nil {
		if p, ok := sender.(Prober); ok {
			if got, perr := p.Delivered(sendCtx, msg.DeliveryID, *att.inDoubtSince); perr == nil && got {
				return s.finish(ctx, att, outcomeConfirmed, 0, "")
			}
		}
	}
	err = sender.Send(sendCtx, msg)
	if err == nil {
		return s.finish(ctx, att, outcomeDelivered, 0, "")
	}
	if ambiguous(ctx, err) {
		// The request may have reached the destination before we stopped waiting: the
		// attempt stays under way, and the retry asks the destination first.
		return fmt.Errorf("alerts: delivery %s: outcome unknown: %w", att.deliveryID, err)
	}
	var de *channels.DeliveryError
	status, retryAfter := 0, time.Duration(0)
	if errors.As(err, &de) {
		status, retryAfter = de.Status, de.RetryAfter
	}
	if !channels.IsRetryable(err) {
		return river.JobCancel(s.finish(ctx, att, outcomeFailed, status, err.Error()))
	}
	delay := retryAfter
	if delay <= 0 {
		delay = s.backoff(att.attempt)
	}
	if s.now().Add(delay).After(att.createdAt.Add(s.cfg.MaxAge)) {
		return river.JobCancel(s.finish(ctx, att, outcomeDead, status, err.Error()))
	}
	if ferr := s.retryLater(ctx, att, status, err.Error(), delay); ferr != nil {
		return ferr
	}
	return river.JobSnooze(delay)
}

// ambiguous reports a failure after which the message may or may not have arrived:
// the worker stopping mid-request, or a timeout waiting for the reply.
func ambiguous(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backoff is the wait before attempt n+1: RetryBase·2ⁿ⁻¹, at most an hour, jittered
// down to half.
func (s *Service) backoff(attempt int) time.Duration {
	base := s.cfg.RetryBase
	if base <= 0 {
		base = defaultRetryBase
	}
	d := base << min(max(attempt-1, 0), 20)
	if d <= 0 || d > maxRetryDelay {
		d = maxRetryDelay
	}
	return d/2 + rand.N(d/2+1)
}

// Attempt outcomes, as alert_attempts records them.
const (
	outcomeDelivered = "delivered"
	outcomeConfirmed = "confirmed" // an in-doubt attempt the destination says arrived
	outcomeRetry     = "retry"
	outcomeFailed    = "failed" // permanent: the destination refused it
	outcomeDead      = "dead"   // retried past MaxAge, or its channel is gone
	outcomeInDoubt   = "in_doubt"
)

// attempt is a claimed delivery attempt.
type attempt struct {
	env          store.Environment
	deliveryID   uuid.UUID
	alertID      uuid.UUID
	channelID    *uuid.UUID
	alert        Alert
	channel      *storedChannel // nil once deleted
	attemptID    int64
	attempt      int
	createdAt    time.Time // the start of the retry window
	resends      int
	expired      bool
	inDoubtSince *time.Time // the start of an attempt that never finished
}

// claimSQL locks the delivery, records the new attempt (marking an unfinished one
// in doubt) and reads the delivery, its alert and its channel: one statement, one
// round trip, its own transaction. At a thousand alerts at once, round trips are what
// delivery costs. A delivery that is done (delivered, dead) or gone returns no row.
const claimSQL = `with cur as (
		select id, tenant_id, environment_id, alert_id, channel_id, status, attempts, window_start, resends
		from alert_deliveries where id = $1 and status in ('pending', 'sending') for update
	), doubt as (
		update alert_attempts set outcome = $2, finished_at = now(),
			error = 'the worker stopped during this attempt; its outcome is unknown'
		where id = (select max(t.id) from alert_attempts t, cur where t.delivery_id = cur.id and cur.status = 'sending')
		returning started_at
	), claimed as (
		update alert_deliveries d set status = 'sending', attempts = cur.attempts + 1, next_attempt_at = null, updated_at = now()
		from cur where d.id = cur.id
	), att as (
		insert into alert_attempts (delivery_id, attempt) select id, attempts + 1 from cur returning id
	)
	select cur.tenant_id, cur.environment_id, cur.alert_id, cur.channel_id, cur.status, cur.attempts + 1, cur.window_start,
		cur.resends, (select id from att), (select started_at from doubt),
		a.` + alertColumnsA + `,
		c.id, c.name, c.kind, c.config, c.secrets_sealed, c.created_at, c.updated_at
	from cur join alerts a on a.id = cur.alert_id left join alert_channels c on c.id = cur.channel_id`

// claim records a new attempt as under way and commits it before anything is sent.
// It returns nil when the delivery needs nothing (delivered, dead, deleted).
func (s *Service) claim(ctx context.Context, id uuid.UUID) (*attempt, error) {
	a := attempt{deliveryID: id}
	var status string
	var doubt *time.Time
	var al Alert
	var data []byte
	var ch struct {
		id                 *uuid.UUID
		name, kind, sealed *string
		config             []byte
		created, updated   *time.Time
	}
	err := s.pool.QueryRow(ctx, claimSQL, id, outcomeInDoubt).Scan(&a.env.TenantID, &a.env.ID, &a.alertID, &a.channelID, &status,
		&a.attempt, &a.createdAt, &a.resends, &a.attemptID, &doubt,
		&al.ID, &al.RuleID, &al.RuleName, &al.Kind, &al.CustomerID, &al.Entitlement, &al.Threshold, &al.PeriodStart,
		&al.Title, &al.Summary, &data, &al.Superseded, &al.FiredAt,
		&ch.id, &ch.name, &ch.kind, &ch.config, &ch.sealed, &ch.created, &ch.updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("alerts: claim delivery: %w", err)
	}
	if err := al.finish(data); err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	a.alert = al
	if ch.id != nil {
		c := &storedChannel{Channel: Channel{ID: *ch.id, Name: *ch.name, Kind: *ch.kind, CreatedAt: *ch.created, UpdatedAt: *ch.updated}, sealed: *ch.sealed}
		var cc channelConfig
		if err := json.Unmarshal(ch.config, &cc); err != nil {
			return nil, fmt.Errorf("alerts: channel %s config: %w", c.ID, err)
		}
		c.Slack, c.Email, c.Webhook = cc.Slack, cc.Email, cc.Webhook
		a.channel = c
	}
	a.expired = s.now().After(a.createdAt.Add(s.cfg.MaxAge))
	if status == "sending" {
		if doubt == nil { // no attempt was recorded: it never started
			doubt = &a.createdAt
		}
		a.inDoubtSince = doubt
	}
	return &a, nil
}

// finish records an attempt's final outcome, in one statement. It runs even when the
// job's context ended (a worker stopping): the message went out, and that must be
// written down.
func (s *Service) finish(ctx context.Context, att *attempt, outcome string, status int, msg string) error {
	next := "dead"
	var deliveredAt any
	if outcome == outcomeDelivered || outcome == outcomeConfirmed {
		next, deliveredAt = "delivered", s.now()
	}
	return s.record(ctx, att, outcome, status, msg, next, deliveredAt, nil)
}

// retryLater records a failed attempt that will be retried after delay.
func (s *Service) retryLater(ctx context.Context, att *attempt, status int, msg string, delay time.Duration) error {
	return s.record(ctx, att, outcomeRetry, status, msg, "pending", nil, s.now().Add(delay))
}

func (s *Service) record(ctx context.Context, att *attempt, outcome string, status int, msg, next string, deliveredAt, nextAttempt any) error {
	_, err := s.pool.Exec(context.WithoutCancel(ctx), `with attempt as (
			update alert_attempts set outcome = $2, status_code = $3, error = $4, finished_at = now() where id = $1
		)
		update alert_deliveries set status = $6, last_error = $4, delivered_at = $7, next_attempt_at = $8, updated_at = now()
		where id = $5`, att.attemptID, outcome, status, truncateError(msg), att.deliveryID, next, deliveredAt, nextAttempt)
	if err != nil {
		return fmt.Errorf("alerts: record attempt: %w", err)
	}
	kind := "deleted"
	if att.channel != nil {
		kind = att.channel.Kind
	}
	s.cfg.Metrics.attempt(kind, outcome)
	return nil
}

func truncateError(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// prepare opens the channel and renders the alert.
func (s *Service) prepare(att *attempt) (channels.Sender, channels.Message, error) {
	if att.channel == nil {
		return nil, channels.Message{}, errors.New("the channel was deleted")
	}
	sec, err := s.open(att.env, att.channel.ID, att.channel.sealed)
	if err != nil {
		return nil, channels.Message{}, err
	}
	att.channel.secrets = sec
	return s.sender(att.channel), s.message(messageID(att.deliveryID, att.resends), att.alert), nil
}

// sender builds the channel's client with its secrets.
func (s *Service) sender(c *storedChannel) channels.Sender {
	sec := c.secrets
	switch c.Kind {
	case ChannelSlack:
		if sec.SlackWebhookURL != "" {
			return channels.Slack{WebhookURL: sec.SlackWebhookURL, HTTPClient: s.tenantHTTP}
		}
		ch := ""
		if c.Slack != nil {
			ch = c.Slack.Channel
		}
		return channels.Slack{Token: sec.SlackToken, Channel: ch, APIURL: s.cfg.SlackAPIURL, HTTPClient: s.cfg.HTTPClient}
	case ChannelEmail:
		e := c.Email
		return channels.Email{Host: e.SMTP.Host, Port: e.SMTP.Port, Username: e.SMTP.Username, Password: sec.SMTPPassword,
			From: e.From, To: e.To, TLS: e.SMTP.TLS, Timeout: sendTimeout, Dial: s.tenantDial}
	default:
		keys := []string{sec.WebhookSecret}
		if sec.PreviousSecret != "" && sec.PreviousUntil != nil && s.now().Before(*sec.PreviousUntil) {
			keys = append(keys, sec.PreviousSecret)
		}
		url := ""
		if c.Webhook != nil {
			url = c.Webhook.URL
		}
		return channels.Webhook{URL: url, Secrets: keys, HTTPClient: s.tenantHTTP}
	}
}

// messageID is what receivers deduplicate on: the delivery, and which resend.
func messageID(id uuid.UUID, resends int) string {
	if resends == 0 {
		return id.String()
	}
	return fmt.Sprintf("%s-r%d", id, resends)
}

func (s *Service) message(deliveryID string, a Alert) channels.Message {
	m := channels.Message{DeliveryID: deliveryID, Title: a.Title, Text: a.Summary, OccurredAt: a.FiredAt}
	add := func(label, value string) {
		if value != "" {
			m.Fields = append(m.Fields, channels.Field{Label: label, Value: value})
		}
	}
	add("Customer", a.CustomerID)
	plan, _ := a.Data["plan"].(string)
	add("Plan", plan)
	add("Entitlement", a.Entitlement)
	if v, ok := a.Data["value"]; ok {
		if l, ok := a.Data["limit"]; ok {
			add("Value / limit", fmt.Sprint(v)+" / "+fmt.Sprint(l))
		} else {
			add("Value", fmt.Sprint(v))
		}
	}
	add("Rule", a.RuleName)
	if s.cfg.PublicURL != "" && a.CustomerID != "" {
		m.Link = strings.TrimRight(s.cfg.PublicURL, "/") + "/dashboard/customers/" + url.PathEscape(a.CustomerID)
	}
	data, err := json.Marshal(a)
	if err == nil {
		m.Data = data
	}
	return m
}
