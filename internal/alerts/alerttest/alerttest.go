// Package alerttest runs the destinations alerts go to, for tests, benchmarks and the
// demo: a Slack server (slack-go's slacktest, with chat.postMessage captured, a
// conversations.history that returns what was posted, and switches to answer 429 or
// be down), a real SMTP server (emersion/go-smtp) that keeps what it receives, and a
// webhook receiver that verifies Standard Webhooks signatures.
package alerttest

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/limitr/limitr/internal/alerts/channels"
)

// SlackMessage is one chat.postMessage the server accepted.
type SlackMessage struct {
	Channel    string
	Text       string
	Blocks     slack.Blocks
	DeliveryID string // from the message metadata
	Token      string
	At         time.Time
}

// Slack is a Slack-compatible Web API server.
type Slack struct {
	srv *slacktest.Server

	mu        sync.Mutex
	posted    []SlackMessage
	limited   int           // answer this many more posts with 429
	retry     time.Duration // the Retry-After of a 429
	down      bool          // answer every post with 503
	hold      chan struct{} // when set, a post is recorded and then waits on it
	onPost    func(SlackMessage)
	refused   int
	histories int
}

// NewSlack starts a Slack server; Close stops it.
func NewSlack() *Slack {
	s := &Slack{}
	s.srv = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", s.postMessage)
		c.Handle("/conversations.history", s.history)
	})
	s.srv.Start()
	return s
}

// APIURL is the base URL to give Slack clients (ends with "/").
func (s *Slack) APIURL() string { return s.srv.GetAPIURL() }

// Close stops the server.
func (s *Slack) Close() { s.srv.Stop() }

// Posted returns the accepted messages, oldest first.
func (s *Slack) Posted() []SlackMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SlackMessage(nil), s.posted...)
}

// Refused is how many posts were answered 429 or 503.
func (s *Slack) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// RateLimit answers the next n posts 429 with Retry-After.
func (s *Slack) RateLimit(n int, retryAfter time.Duration) {
	s.mu.Lock()
	s.limited, s.retry = n, retryAfter
	s.mu.Unlock()
}

// SetDown makes every post fail with 503 until called with false.
func (s *Slack) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Hold makes the next posts be recorded as accepted and then not answered until the
// returned func is called: a sender that gives up meanwhile cannot know it arrived.
func (s *Slack) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

// OnPost calls fn (outside the lock) for every accepted post.
func (s *Slack) OnPost(fn func(SlackMessage)) {
	s.mu.Lock()
	s.onPost = fn
	s.mu.Unlock()
}

func (s *Slack) postMessage(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m := SlackMessage{Channel: v.Get("channel"), Text: v.Get("text"), At: time.Now(),
		Token: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")}
	if m.Token == "" {
		m.Token = v.Get("token")
	}
	if b := v.Get("blocks"); b != "" {
		if err := json.Unmarshal([]byte(b), &m.Blocks); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	var meta slack.SlackMetadata
	if raw := v.Get("metadata"); raw != "" && json.Unmarshal([]byte(raw), &meta) == nil {
		m.DeliveryID, _ = meta.EventPayload["delivery_id"].(string)
	}
	s.mu.Lock()
	switch {
	case s.down:
		s.refused++
		s.mu.Unlock()
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	case s.limited > 0:
		s.limited--
		s.refused++
		retry := s.retry
		s.mu.Unlock()
		w.Header().Set("Retry-After", strconv.Itoa(int(max(retry.Round(time.Second)/time.Second, 1))))
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	s.posted = append(s.posted, m)
	hold, onPost := s.hold, s.onPost
	s.mu.Unlock()
	if onPost != nil {
		onPost(m)
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": m.Channel, "ts": strconv.FormatInt(m.At.UnixMicro(), 10)})
}

// history answers conversations.history with what was posted to the channel, with
// metadata, newest first.
func (s *Slack) history(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	ch := r.Form.Get("channel")
	s.mu.Lock()
	s.histories++
	var msgs []map[string]any
	for i := len(s.posted) - 1; i >= 0; i-- {
		m := s.posted[i]
		if m.Channel != ch {
			continue
		}
		msgs = append(msgs, map[string]any{"type": "message", "text": m.Text, "ts": strconv.FormatInt(m.At.UnixMicro(), 10),
			"metadata": map[string]any{"event_type": channels.MetadataEventType, "event_payload": map[string]any{"delivery_id": m.DeliveryID}}})
	}
	s.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "messages": msgs, "has_more": false})
}

// HistoryCalls is how many times conversations.history was asked.
func (s *Slack) HistoryCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.histories
}

// Mail is one message the SMTP server received.
type Mail struct {
	From string
	To   []string
	Data []byte
}

// SMTP is a real SMTP server on loopback that keeps what it receives.
type SMTP struct {
	srv  *smtp.Server
	Port int

	mu   sync.Mutex
	msgs []Mail
}

// NewSMTP starts an SMTP server on 127.0.0.1 (no TLS, no auth); Close stops it.
func NewSMTP() (*SMTP, error) {
	s := &SMTP{}
	srv := smtp.NewServer(smtpBackend{s})
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.srv, s.Port = srv, ln.Addr().(*net.TCPAddr).Port
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *SMTP) Close() { _ = s.srv.Close() }

// Received returns the messages so far.
func (s *SMTP) Received() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.msgs...)
}

type smtpBackend struct{ s *SMTP }

func (b smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: b.s}, nil }

type smtpSession struct {
	s   *SMTP
	cur Mail
}

func (x *smtpSession) Mail(from string, _ *smtp.MailOptions) error { x.cur.From = from; return nil }
func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.cur.To = append(x.cur.To, to)
	return nil
}
func (x *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.cur.Data = data
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, x.cur)
	x.s.mu.Unlock()
	return nil
}
func (x *smtpSession) Reset()        { x.cur = Mail{} }
func (x *smtpSession) Logout() error { return nil }

// Hook is one webhook delivery the receiver verified.
type Hook struct {
	ID        string
	Timestamp string
	Signature string
	Body      []byte
}

// Webhook is an HTTP receiver that verifies Standard Webhooks signatures against its
// secrets and answers 401 to anything else.
type Webhook struct {
	srv *httptest.Server

	mu      sync.Mutex
	secrets []string
	hooks   []Hook
	bad     int
}

// NewWebhook starts a receiver; URL is where to send, Close stops it.
func NewWebhook() *Webhook {
	h := &Webhook{}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	return h
}

// URL is the receiver's address.
func (h *Webhook) URL() string { return h.srv.URL }

// Close stops the receiver.
func (h *Webhook) Close() { h.srv.Close() }

// SetSecrets sets the secrets signatures are checked against (any one may match).
func (h *Webhook) SetSecrets(secrets ...string) {
	h.mu.Lock()
	h.secrets = secrets
	h.mu.Unlock()
}

// Received returns the verified deliveries.
func (h *Webhook) Received() []Hook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Hook(nil), h.hooks...)
}

// Rejected is how many requests failed verification.
func (h *Webhook) Rejected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bad
}

func (h *Webhook) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	hk := Hook{ID: r.Header.Get("webhook-id"), Timestamp: r.Header.Get("webhook-timestamp"), Signature: r.Header.Get("webhook-signature"), Body: body}
	h.mu.Lock()
	secrets := h.secrets
	h.mu.Unlock()
	err := errors.New("no secret configured")
	if len(secrets) > 0 {
		err = channels.Verify(secrets, hk.ID, hk.Timestamp, hk.Signature, body, time.Now(), 5*time.Minute)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	h.hooks = append(h.hooks, hk)
	w.WriteHeader(http.StatusNoContent)
}
