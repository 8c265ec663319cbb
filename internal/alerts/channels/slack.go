package channels

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/slack-go/slack"
)

// Slack posts to Slack, either with a bot token and a channel
// (chat.postMessage with Block Kit) or to an incoming webhook URL.
type Slack struct {
	Token, Channel string
	WebhookURL     string
	APIURL         string // default https://slack.com/api/
	HTTPClient     *http.Client
}

// Validate checks the Slack input, naming the bad field.
func (s Slack) Validate() error {
	if s.WebhookURL != "" {
		if s.Token != "" {
			return fieldError("slack.token", "set either a token and channel or a webhook URL, not both")
		}
		if !isHTTPURL(s.WebhookURL) {
			return fieldError("slack.webhook_url", "must be an http(s) URL")
		}
		return nil
	}
	if s.Token == "" {
		return fieldError("slack.token", "is required without a webhook URL")
	}
	if strings.TrimSpace(s.Channel) == "" {
		return fieldError("slack.channel", "is required with a token")
	}
	if s.APIURL != "" && !isHTTPURL(s.APIURL) {
		return fieldError("slack.api_url", "must be an http(s) URL")
	}
	return nil
}

func isHTTPURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Blocks renders m as Block Kit: a header, a section with the text, a fields
// section, and a link button when m.Link is set.
func Blocks(m Message) []slack.Block {
	var blocks []slack.Block
	if m.Title != "" {
		blocks = append(blocks, slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, truncate(m.Title, 150), false, false)))
	}
	if m.Text != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.PlainTextType, truncate(m.Text, 3000), false, false), nil, nil))
	}
	if len(m.Fields) > 0 {
		var fields []*slack.TextBlockObject
		for i, f := range m.Fields {
			if i == 10 { // Slack allows at most 10 fields per section
				break
			}
			fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, truncate("*"+escapeMrkdwn(f.Label)+"*\n"+escapeMrkdwn(f.Value), 2000), false, false))
		}
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}
	if m.Link != "" {
		btn := slack.NewButtonBlockElement("open", m.DeliveryID, slack.NewTextBlockObject(slack.PlainTextType, "Open in dashboard", false, false))
		btn.URL = m.Link
		blocks = append(blocks, slack.NewActionBlock("links", btn))
	}
	return blocks
}

func escapeMrkdwn(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// fallback is the notification text (shown where blocks are not).
func fallback(m Message) string {
	switch {
	case m.Title == "":
		return m.Text
	case m.Text == "":
		return m.Title
	}
	return m.Title + ": " + m.Text
}

// Send delivers m to Slack.
func (s Slack) Send(ctx context.Context, m Message) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	client := s.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	blocks := Blocks(m)
	if s.WebhookURL != "" {
		err := slack.PostWebhookCustomHTTPContext(ctx, s.WebhookURL, client, &slack.WebhookMessage{
			Text:   fallback(m),
			Blocks: &slack.Blocks{BlockSet: blocks},
		})
		return s.classify(err)
	}
	api := s.api(client)
	_, _, err := api.PostMessageContext(ctx, s.Channel,
		slack.MsgOptionText(fallback(m), false),
		slack.MsgOptionBlocks(blocks...),
		slack.MsgOptionMetadata(slack.SlackMetadata{EventType: MetadataEventType,
			EventPayload: map[string]any{"delivery_id": m.DeliveryID}}),
	)
	return s.classify(err)
}

// api is a Web API client on the configured base URL.
func (s Slack) api(client *http.Client) *slack.Client {
	opts := []slack.Option{slack.OptionHTTPClient(client)}
	if s.APIURL != "" {
		base := s.APIURL
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		opts = append(opts, slack.OptionAPIURL(base))
	}
	return slack.New(s.Token, opts...)
}

// MetadataEventType marks the messages this package posts with a bot token; their
// metadata carries the delivery id, so Delivered can find them again.
const MetadataEventType = "limitr_alert"

// Delivered reports whether a message for deliveryID was posted to the channel since
// since: after a crash between posting and recording, it tells a retry whether the
// first attempt got through, so the message is not sent twice. It needs a bot token
// (an incoming webhook cannot be read back) and the channel's id (conversations.history
// takes no names); ErrUnsupported otherwise, and the caller must decide without it.
func (s Slack) Delivered(ctx context.Context, deliveryID string, since time.Time) (bool, error) {
	if s.Token == "" || s.WebhookURL != "" || strings.HasPrefix(s.Channel, "#") {
		return false, errors.ErrUnsupported
	}
	client := s.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	api := s.api(client)
	params := &slack.GetConversationHistoryParameters{ChannelID: s.Channel, IncludeAllMetadata: true, Limit: 200,
		Oldest: fmt.Sprintf("%d.000000", since.Add(-time.Minute).Unix())}
	for range 20 { // at most 4,000 messages back
		resp, err := api.GetConversationHistoryContext(ctx, params)
		if err != nil {
			return false, s.classify(err)
		}
		for _, msg := range resp.Messages {
			if msg.Metadata.EventType == MetadataEventType && msg.Metadata.EventPayload["delivery_id"] == deliveryID {
				return true, nil
			}
		}
		if !resp.HasMore || resp.ResponseMetaData.NextCursor == "" {
			return false, nil
		}
		params.Cursor = resp.ResponseMetaData.NextCursor
	}
	return false, errors.New("slack: history too long to check")
}

// permanentSlackErrors are API error codes a retry cannot fix.
var permanentSlackErrors = map[string]bool{
	"channel_not_found": true, "not_in_channel": true, "is_archived": true,
	"invalid_auth": true, "not_authed": true, "account_inactive": true,
	"token_revoked": true, "token_expired": true, "no_permission": true,
	"missing_scope": true, "invalid_blocks": true, "invalid_blocks_format": true,
	"msg_too_long": true, "no_text": true, "restricted_action": true,
	"ekm_access_denied": true, "team_access_not_granted": true,
	"invalid_arguments": true, "channel_is_archived": true,
	"no_service": true, "no_service_id": true, "no_team": true,
	"team_disabled": true, "action_prohibited": true, "posting_to_general_channel_denied": true,
}

// retryableSlackErrors are API error codes that say "try later".
var retryableSlackErrors = map[string]bool{
	"ratelimited": true, "rate_limited": true, "internal_error": true,
	"fatal_error": true, "service_unavailable": true, "request_timeout": true,
}

func (s Slack) classify(err error) error {
	if err == nil {
		return nil
	}
	if refused := refusedDestination("slack", err); refused != nil {
		return refused
	}
	safe := scrub(err, s.Token, s.WebhookURL)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &DeliveryError{Channel: "slack", Retryable: true, Err: safe}
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return &DeliveryError{Channel: "slack", Status: http.StatusTooManyRequests, RetryAfter: rl.RetryAfter, Retryable: true, Err: safe}
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		return &DeliveryError{Channel: "slack", Status: sc.Code, Retryable: retryableStatus(sc.Code), Err: safe}
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return &DeliveryError{Channel: "slack", Retryable: retryableSlackErrors[se.Err], Err: fmt.Errorf("slack api error: %s", se.Err)}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return &DeliveryError{Channel: "slack", Retryable: true, Err: safe}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return &DeliveryError{Channel: "slack", Retryable: true, Err: safe}
	}
	// Incoming webhooks answer errors as text ("invalid_token", "no_text"...).
	msg := err.Error()
	if permanentSlackErrors[msg] {
		return &DeliveryError{Channel: "slack", Err: safe}
	}
	return &DeliveryError{Channel: "slack", Retryable: retryableSlackErrors[msg], Err: safe}
}
