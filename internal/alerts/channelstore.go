package alerts

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Channel kinds.
const (
	ChannelSlack   = "slack"
	ChannelEmail   = "email"
	ChannelWebhook = "webhook"
)

// RotationOverlap is how long a rotated webhook secret keeps signing next to the new one.
const RotationOverlap = 24 * time.Hour

// Channel is a destination as the API shows it: secrets are never included, only
// hints, except SigningSecret right after it was made.
type Channel struct {
	ID        uuid.UUID    `json:"id"`
	Name      string       `json:"name"`
	Kind      string       `json:"kind"`
	Slack     *SlackView   `json:"slack,omitempty"`
	Email     *EmailView   `json:"email,omitempty"`
	Webhook   *WebhookView `json:"webhook,omitempty"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// SlackView is a Slack channel without its token or webhook URL.
type SlackView struct {
	Channel        string `json:"channel,omitempty"`
	TokenHint      string `json:"token_hint,omitempty"`
	WebhookURLHint string `json:"webhook_url_hint,omitempty"`
}

// EmailView is an email channel without its SMTP password.
type EmailView struct {
	To   []string `json:"to"`
	From string   `json:"from"`
	SMTP SMTPView `json:"smtp"`
}

// SMTPView is the SMTP server, PasswordSet in place of the password.
type SMTPView struct {
	Host        string `json:"host"`
	Port        int    `json:"port"`
	Username    string `json:"username,omitempty"`
	TLS         string `json:"tls"`
	PasswordSet bool   `json:"password_set"`
}

// WebhookView is a webhook channel. SigningSecret is set only in the reply that
// created or rotated it: store it then, it is not shown again.
type WebhookView struct {
	URL                string     `json:"url"`
	SecretHint         string     `json:"secret_hint"`
	PreviousValidUntil *time.Time `json:"previous_secret_valid_until,omitempty"`
	SigningSecret      string     `json:"signing_secret,omitempty"`
}

// ChannelInput creates a channel (POST) or changes one (PATCH: set fields only; a
// kind's block replaces the stored one, except that secrets left out are kept).
type ChannelInput struct {
	Name    *string       `json:"name"`
	Kind    *string       `json:"kind"`
	Slack   *SlackInput   `json:"slack"`
	Email   *EmailInput   `json:"email"`
	Webhook *WebhookInput `json:"webhook"`
}

// SlackInput is a bot token and channel, or an incoming-webhook URL.
type SlackInput struct {
	Token      string `json:"token"`
	Channel    string `json:"channel"`
	WebhookURL string `json:"webhook_url"`
}

// EmailInput is recipients, sender and SMTP server.
type EmailInput struct {
	To   []string  `json:"to"`
	From string    `json:"from"`
	SMTP SMTPInput `json:"smtp"`
}

// SMTPInput is the SMTP server; TLS is none, starttls (default) or tls.
type SMTPInput struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Username string `json:"username"`
	Password string `json:"password"`
	TLS      string `json:"tls"`
}

// WebhookInput is the receiver's URL. Secret (whsec_<base64>) is optional: without
// it one is generated. RotateSecret (PATCH) makes a new secret; the old one keeps
// signing next to it for RotationOverlap.
type WebhookInput struct {
	URL          string `json:"url"`
	Secret       string `json:"secret"`
	RotateSecret bool   `json:"rotate_secret"`
}

// channelConfig is what is stored in the clear.
type channelConfig struct {
	Slack   *SlackView   `json:"slack,omitempty"`
	Email   *EmailView   `json:"email,omitempty"`
	Webhook *WebhookView `json:"webhook,omitempty"`
}

// channelSecrets is what is sealed.
type channelSecrets struct {
	SlackToken      string     `json:"slack_token,omitempty"`
	SlackWebhookURL string     `json:"slack_webhook_url,omitempty"`
	SMTPPassword    string     `json:"smtp_password,omitempty"`
	WebhookSecret   string     `json:"webhook_secret,omitempty"`
	PreviousSecret  string     `json:"previous_webhook_secret,omitempty"`
	PreviousUntil   *time.Time `json:"previous_until,omitempty"`
}

// storedChannel is a channel row with its secrets open.
type storedChannel struct {
	Channel
	secrets channelSecrets
	sealed  string // secrets as stored
}

func channelAAD(env store.Environment, id uuid.UUID) []byte {
	return secrets.AAD(env.TenantID.String(), env.ID.String(), "alert_channels", id.String())
}

func (s *Service) seal(env store.Environment, id uuid.UUID, sec channelSecrets) (string, error) {
	if s.keyring == nil || s.keyring.Ephemeral() {
		return "", ErrEphemeralKeyring
	}
	raw, err := json.Marshal(sec)
	if err != nil {
		return "", err
	}
	return s.keyring.SealString(raw, channelAAD(env, id))
}

func (s *Service) open(env store.Environment, id uuid.UUID, sealed string) (channelSecrets, error) {
	var sec channelSecrets
	if s.keyring == nil {
		return sec, errors.New("alerts: no keyring to open channel secrets (set LIMITR_SECRET_KEY)")
	}
	raw, err := s.keyring.OpenString(sealed, channelAAD(env, id))
	if err != nil {
		return sec, fmt.Errorf("alerts: open the secrets of channel %s: %w", id, err)
	}
	return sec, json.Unmarshal(raw, &sec)
}

func hint(secret string) string {
	if len(secret) <= 8 {
		return strings.Repeat("•", len(secret))
	}
	return secret[:min(5, len(secret)-4)] + "…" + secret[len(secret)-4:]
}

// urlHint shows a URL's scheme and host only: the path of a Slack webhook is its secret.
func urlHint(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		rest := raw[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return raw[:i+3+j] + "/…"
		}
	}
	return "…"
}

// NewWebhookSecret makes a signing secret: whsec_ and 32 random bytes in base64.
func NewWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// build validates in over the stored channel c (zero for a new one) and returns the
// new clear config and secrets. now dates a rotation.
func build(c *storedChannel, in ChannelInput, now time.Time) (channelConfig, channelSecrets, error) {
	var errs validation.Errors
	if in.Name != nil {
		c.Name = strings.TrimSpace(*in.Name)
	}
	if in.Kind != nil {
		if c.Kind != "" && c.Kind != *in.Kind {
			errs.Add("kind", "cannot change: create a new channel")
		}
		c.Kind = *in.Kind
	}
	if c.Name == "" {
		errs.Add("name", "is required")
	} else {
		errs.AddField(validation.Text("name", c.Name, maxName))
	}
	sec := c.secrets
	var cfg channelConfig
	switch c.Kind {
	case ChannelSlack:
		cfg.Slack = buildSlack(c, in.Slack, &sec, &errs)
	case ChannelEmail:
		cfg.Email = buildEmail(c, in.Email, &sec, &errs)
	case ChannelWebhook:
		cfg.Webhook = buildWebhook(c, in.Webhook, &sec, now, &errs)
	default:
		errs.Addf("kind", "must be slack, email or webhook, got %q", c.Kind)
	}
	for _, other := range [][2]any{{"slack", in.Slack}, {"email", in.Email}, {"webhook", in.Webhook}} {
		if other[0] != c.Kind && !isNil(other[1]) {
			errs.Addf(other[0].(string), "does not apply to a %s channel", c.Kind)
		}
	}
	return cfg, sec, errs.Err("invalid alert channel")
}

func isNil(v any) bool {
	switch x := v.(type) {
	case *SlackInput:
		return x == nil
	case *EmailInput:
		return x == nil
	case *WebhookInput:
		return x == nil
	}
	return v == nil
}

func buildSlack(c *storedChannel, in *SlackInput, sec *channelSecrets, errs *validation.Errors) *SlackView {
	view := c.Slack
	if in == nil {
		if view == nil {
			errs.Add("slack", "is required for a slack channel: {\"token\", \"channel\"} or {\"webhook_url\"}")
		}
		return view
	}
	next := channels.Slack{Token: in.Token, Channel: strings.TrimSpace(in.Channel), WebhookURL: in.WebhookURL}
	if next.Token == "" && next.WebhookURL == "" && view != nil && view.Channel != "" && sec.SlackToken != "" {
		next.Token = sec.SlackToken // a new channel name with the stored token
	}
	if err := next.Validate(); err != nil {
		addChannelError(errs, err)
		return view
	}
	*sec = channelSecrets{SlackToken: next.Token, SlackWebhookURL: next.WebhookURL}
	if next.WebhookURL != "" {
		return &SlackView{WebhookURLHint: urlHint(next.WebhookURL)}
	}
	return &SlackView{Channel: next.Channel, TokenHint: hint(next.Token)}
}

func buildEmail(c *storedChannel, in *EmailInput, sec *channelSecrets, errs *validation.Errors) *EmailView {
	if in == nil {
		if c.Email == nil {
			errs.Add("email", "is required for an email channel")
		}
		return c.Email
	}
	password := in.SMTP.Password
	if password == "" && c.Email != nil && c.Email.SMTP.Username == in.SMTP.Username && c.Email.SMTP.Host == in.SMTP.Host {
		password = sec.SMTPPassword // kept unless the server or user changes
	}
	tls := in.SMTP.TLS
	if tls == "" {
		tls = "starttls"
	}
	e := channels.Email{Host: in.SMTP.Host, Port: in.SMTP.Port, Username: in.SMTP.Username, Password: password,
		From: in.From, To: in.To, TLS: tls}
	if err := e.Validate(); err != nil {
		addChannelError(errs, err)
		return c.Email
	}
	*sec = channelSecrets{SMTPPassword: password}
	return &EmailView{To: e.To, From: e.From, SMTP: SMTPView{Host: e.Host, Port: e.Port, Username: e.Username, TLS: tls, PasswordSet: password != ""}}
}

func buildWebhook(c *storedChannel, in *WebhookInput, sec *channelSecrets, now time.Time, errs *validation.Errors) *WebhookView {
	view := c.Webhook
	if in == nil {
		if view == nil {
			errs.Add("webhook", "is required for a webhook channel: {\"url\"}")
		}
		return view
	}
	url := in.URL
	if url == "" && view != nil {
		url = view.URL
	}
	next := *sec
	fresh := ""
	switch {
	case in.Secret != "":
		fresh = in.Secret
	case in.RotateSecret || next.WebhookSecret == "":
		s, err := NewWebhookSecret()
		if err != nil {
			errs.Add("webhook.secret", "could not be generated")
			return view
		}
		fresh = s
	}
	if fresh != "" {
		if next.WebhookSecret != "" {
			until := now.Add(RotationOverlap).UTC()
			next.PreviousSecret, next.PreviousUntil = next.WebhookSecret, &until
		}
		next.WebhookSecret = fresh
	}
	w := channels.Webhook{URL: url, Secrets: []string{next.WebhookSecret}}
	if err := w.Validate(); err != nil {
		addChannelError(errs, err)
		return view
	}
	*sec = channelSecrets{WebhookSecret: next.WebhookSecret, PreviousSecret: next.PreviousSecret, PreviousUntil: next.PreviousUntil}
	out := &WebhookView{URL: url, SecretHint: hint(next.WebhookSecret), PreviousValidUntil: next.PreviousUntil}
	if fresh != "" && in.Secret == "" {
		out.SigningSecret = fresh
	}
	return out
}

// addChannelError turns a channels validation error into a field error.
func addChannelError(errs *validation.Errors, err error) {
	var ve *channels.ValidationError
	if errors.As(err, &ve) {
		field := ve.Field
		field = strings.Replace(field, "email.host", "email.smtp.host", 1)
		field = strings.Replace(field, "email.port", "email.smtp.port", 1)
		field = strings.Replace(field, "email.tls", "email.smtp.tls", 1)
		field = strings.Replace(field, "email.username", "email.smtp.username", 1)
		field = strings.Replace(field, "webhook.secrets[0]", "webhook.secret", 1)
		errs.Add(field, ve.Message)
		return
	}
	errs.Add("", err.Error())
}

const channelColumns = `id, name, kind, config, secrets_sealed, created_at, updated_at`

func scanChannel(row pgx.CollectableRow) (*storedChannel, error) {
	var c storedChannel
	var cfg []byte
	if err := row.Scan(&c.ID, &c.Name, &c.Kind, &cfg, &c.sealed, &c.CreatedAt, &c.UpdatedAt); err != nil {
		return nil, err
	}
	var cc channelConfig
	if err := json.Unmarshal(cfg, &cc); err != nil {
		return nil, err
	}
	c.Slack, c.Email, c.Webhook = cc.Slack, cc.Email, cc.Webhook
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return &c, nil
}

// Channels lists an environment's channels by name.
func (s *Service) Channels(ctx context.Context, env store.Environment) ([]Channel, error) {
	rows, err := s.pool.Query(ctx, `select `+channelColumns+` from alert_channels where tenant_id = $1 and environment_id = $2 order by name`,
		env.TenantID, env.ID)
	if err != nil {
		return nil, err
	}
	cs, err := pgx.CollectRows(rows, scanChannel)
	if err != nil {
		return nil, err
	}
	out := make([]Channel, len(cs))
	for i, c := range cs {
		out[i] = c.Channel
	}
	return out, nil
}

// Channel reads one channel.
func (s *Service) Channel(ctx context.Context, env store.Environment, id uuid.UUID) (Channel, error) {
	c, err := s.getChannel(ctx, s.pool, env, id, false, false)
	if err != nil {
		return Channel{}, err
	}
	return c.Channel, nil
}

// getChannel reads a channel; open also opens its secrets.
func (s *Service) getChannel(ctx context.Context, db store.DBTX, env store.Environment, id uuid.UUID, lock, open bool) (*storedChannel, error) {
	q := `select ` + channelColumns + ` from alert_channels where tenant_id = $1 and environment_id = $2 and id = $3`
	if lock {
		q += ` for update`
	}
	rows, err := db.Query(ctx, q, env.TenantID, env.ID, id)
	if err != nil {
		return nil, err
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanChannel)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("alert channel %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if open {
		if c.secrets, err = s.open(env, id, c.sealed); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// CreateChannel validates and stores a channel, its secrets sealed.
func (s *Service) CreateChannel(ctx context.Context, env store.Environment, in ChannelInput) (Channel, error) {
	c := &storedChannel{Channel: Channel{ID: uuid.New()}}
	if in.Kind == nil {
		return Channel{}, validation.New("invalid alert channel", "kind", "is required: slack, email or webhook")
	}
	cfg, sec, err := build(c, in, s.now())
	if err != nil {
		return Channel{}, err
	}
	sealed, err := s.seal(env, c.ID, sec)
	if err != nil {
		return Channel{}, err
	}
	raw, err := json.Marshal(stripSecret(cfg))
	if err != nil {
		return Channel{}, err
	}
	out := Channel{ID: c.ID, Name: c.Name, Kind: c.Kind, Slack: cfg.Slack, Email: cfg.Email, Webhook: cfg.Webhook}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `insert into alert_channels (id, tenant_id, environment_id, name, kind, config, secrets_sealed)
				values ($1, $2, $3, $4, $5, $6, $7) returning created_at, updated_at`,
			c.ID, env.TenantID, env.ID, c.Name, c.Kind, raw, sealed).Scan(&out.CreatedAt, &out.UpdatedAt); err != nil {
			return nameConflict(err)
		}
		out.CreatedAt, out.UpdatedAt = out.CreatedAt.UTC(), out.UpdatedAt.UTC()
		return record(ctx, tx, env, "alert_channel.create", "alert_channel", c.ID.String(), nil, withoutSecret(out))
	})
	return out, err
}

// UpdateChannel changes a channel; secrets not sent are kept.
func (s *Service) UpdateChannel(ctx context.Context, env store.Environment, id uuid.UUID, in ChannelInput) (Channel, error) {
	var out Channel
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := s.getChannel(ctx, tx, env, id, true, true)
		if err != nil {
			return err
		}
		before := c.Channel
		cfg, sec, err := build(c, in, s.now())
		if err != nil {
			return err
		}
		sealed, err := s.seal(env, id, sec)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(stripSecret(cfg))
		if err != nil {
			return err
		}
		out = Channel{ID: id, Name: c.Name, Kind: c.Kind, Slack: cfg.Slack, Email: cfg.Email, Webhook: cfg.Webhook, CreatedAt: c.CreatedAt}
		if err := tx.QueryRow(ctx, `update alert_channels set name = $3, config = $4, secrets_sealed = $5, updated_at = now()
				where environment_id = $1 and id = $2 returning updated_at`, env.ID, id, c.Name, raw, sealed).Scan(&out.UpdatedAt); err != nil {
			return nameConflict(err)
		}
		out.UpdatedAt = out.UpdatedAt.UTC()
		return record(ctx, tx, env, "alert_channel.update", "alert_channel", id.String(), before, withoutSecret(out))
	})
	return out, err
}

// DeleteChannel removes a channel and takes it out of every rule. Deliveries already
// made keep its name.
func (s *Service) DeleteChannel(ctx context.Context, env store.Environment, id uuid.UUID) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := s.getChannel(ctx, tx, env, id, true, false)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `update alert_rules set channels = array_remove(channels, $2), updated_at = now()
			where environment_id = $1 and $2 = any(channels)`, env.ID, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `delete from alert_channels where environment_id = $1 and id = $2`, env.ID, id); err != nil {
			return err
		}
		return record(ctx, tx, env, "alert_channel.delete", "alert_channel", id.String(), c.Channel, nil)
	})
}

// stripSecret keeps the one-time signing secret out of what is stored.
func stripSecret(cfg channelConfig) channelConfig {
	cfg.Webhook = cfg.Webhook.stored()
	return cfg
}

// withoutSecret keeps the one-time signing secret out of the audit log.
func withoutSecret(c Channel) Channel {
	c.Webhook = c.Webhook.stored()
	return c
}

// stored is the view without the one-time signing secret.
func (v *WebhookView) stored() *WebhookView {
	if v == nil {
		return nil
	}
	w := *v
	w.SigningSecret = ""
	return &w
}

// Reseal re-seals every channel's secrets under the keyring's newest key, so an old
// key can be retired. It returns how many it re-sealed. A row changed meanwhile is
// left for the next run.
func (s *Service) Reseal(ctx context.Context) (int, error) {
	if s.keyring == nil || s.keyring.Ephemeral() {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, `select id, tenant_id, environment_id, secrets_sealed from alert_channels`)
	if err != nil {
		return 0, err
	}
	type sealedRow struct {
		id     uuid.UUID
		env    store.Environment
		sealed string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealedRow, error) {
		var c sealedRow
		return c, r.Scan(&c.id, &c.env.TenantID, &c.env.ID, &c.sealed)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range all {
		if !s.keyring.NeedsRotationString(c.sealed) {
			continue
		}
		ad := channelAAD(c.env, c.id)
		plain, err := s.keyring.OpenString(c.sealed, ad)
		if err != nil {
			return n, fmt.Errorf("alerts: reseal channel %s: %w", c.id, err)
		}
		next, err := s.keyring.SealString(plain, ad)
		if err != nil {
			return n, err
		}
		if _, err := s.pool.Exec(ctx, `update alert_channels set secrets_sealed = $2 where id = $1 and secrets_sealed = $3`,
			c.id, next, c.sealed); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
