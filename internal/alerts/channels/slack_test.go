package channels

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
)

type postedMessage struct {
	Channel, Text string
	Blocks        slack.Blocks
	Token         string
}

// slackServer is slacktest's server with chat.postMessage captured.
func slackServer(t *testing.T, reply func(w http.ResponseWriter) bool) (*slacktest.Server, func() []postedMessage) {
	var mu sync.Mutex
	var posted []postedMessage
	srv := slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			v, err := url.ParseQuery(string(body))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			p := postedMessage{Channel: v.Get("channel"), Text: v.Get("text"), Token: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")}
			if p.Token == "" {
				p.Token = v.Get("token")
			}
			if b := v.Get("blocks"); b != "" {
				if err := json.Unmarshal([]byte(b), &p.Blocks); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
			}
			mu.Lock()
			posted = append(posted, p)
			mu.Unlock()
			if reply != nil && reply(w) {
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": p.Channel, "ts": "1700000000.000100"})
		})
	})
	srv.Start()
	t.Cleanup(srv.Stop)
	return srv, func() []postedMessage {
		mu.Lock()
		defer mu.Unlock()
		return append([]postedMessage(nil), posted...)
	}
}

func TestSlackPostMessage(t *testing.T) {
	srv, posted := slackServer(t, nil)
	m := testMessage()
	s := Slack{Token: "xoxb-secret-token", Channel: "C0ALERTS", APIURL: srv.GetAPIURL()}
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	got := posted()
	if len(got) != 1 {
		t.Fatalf("%d messages posted", len(got))
	}
	p := got[0]
	if p.Channel != "C0ALERTS" || p.Text != "Limit reached: acme used 100% of api_calls" || p.Token != "xoxb-secret-token" {
		t.Errorf("posted %+v", p)
	}
	var header, fields, button bool
	for _, b := range p.Blocks.BlockSet {
		switch b := b.(type) {
		case *slack.HeaderBlock:
			header = b.Text.Text == m.Title
		case *slack.SectionBlock:
			if len(b.Fields) == len(m.Fields) {
				fields = true
				for i, f := range m.Fields {
					if !strings.Contains(b.Fields[i].Text, f.Label) || !strings.Contains(b.Fields[i].Text, f.Value) {
						t.Errorf("field %d = %q", i, b.Fields[i].Text)
					}
				}
			}
		case *slack.ActionBlock:
			for _, e := range b.Elements.ElementSet {
				if btn, ok := e.(*slack.ButtonBlockElement); ok && btn.URL == m.Link {
					button = true
				}
			}
		}
	}
	if !header || !fields || !button {
		t.Errorf("blocks: header=%v fields=%v button=%v", header, fields, button)
	}

	// Without a link there is no button.
	m.Link = ""
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	for _, b := range posted()[1].Blocks.BlockSet {
		if b.BlockType() == slack.MBTAction {
			t.Error("button without a link")
		}
	}
}

func TestSlackAPIErrors(t *testing.T) {
	tests := []struct {
		name      string
		reply     func(w http.ResponseWriter)
		status    int
		retryable bool
		after     time.Duration
	}{
		{"channel_not_found", okFalse("channel_not_found"), 0, false, 0},
		{"invalid_auth", okFalse("invalid_auth"), 0, false, 0},
		{"internal_error", okFalse("internal_error"), 0, true, 0},
		{"429", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "12")
			w.WriteHeader(http.StatusTooManyRequests)
		}, 429, true, 12 * time.Second},
		{"503", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }, 503, true, 0},
		{"500", func(w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) }, 500, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := slackServer(t, func(w http.ResponseWriter) bool { tt.reply(w); return true })
			err := Slack{Token: "xoxb-secret-token", Channel: "C1", APIURL: srv.GetAPIURL()}.Send(context.Background(), testMessage())
			checkDelivery(t, err, tt.status, tt.retryable, tt.after)
			if err != nil && strings.Contains(err.Error(), "xoxb-secret-token") {
				t.Errorf("token in error: %v", err)
			}
		})
	}
}

func okFalse(code string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": code})
	}
}

func checkDelivery(t *testing.T, err error, status int, retryable bool, after time.Duration) {
	t.Helper()
	var de *DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want *DeliveryError", err)
	}
	if de.Status != status || de.Retryable != retryable || de.RetryAfter != after {
		t.Errorf("got status=%d retryable=%v after=%s (%v), want %d %v %s", de.Status, de.Retryable, de.RetryAfter, err, status, retryable, after)
	}
	if errors.Is(err, ErrRetryable) != retryable || errors.Is(err, ErrPermanent) == retryable {
		t.Errorf("errors.Is wrong for %v", err)
	}
}

func TestSlackRateLimitHTTPTest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	err := Slack{Token: "xoxb-t", Channel: "C1", APIURL: srv.URL + "/api"}.Send(context.Background(), testMessage())
	checkDelivery(t, err, 429, true, 3*time.Second)
	err = Slack{WebhookURL: srv.URL + "/services/T/B/secretpath"}.Send(context.Background(), testMessage())
	checkDelivery(t, err, 429, true, 3*time.Second)
}

func TestSlackIncomingWebhook(t *testing.T) {
	var got slack.WebhookMessage
	var path string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	hook := srv.URL + "/services/T000/B000/XXXXSECRET"
	m := testMessage()
	if err := (Slack{WebhookURL: hook}).Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if path != "/services/T000/B000/XXXXSECRET" || got.Text != "Limit reached: acme used 100% of api_calls" {
		t.Errorf("path %s, message %+v", path, got)
	}
	if got.Blocks == nil || len(got.Blocks.BlockSet) != 4 {
		t.Fatalf("blocks = %+v", got.Blocks)
	}
	if sec, ok := got.Blocks.BlockSet[2].(*slack.SectionBlock); !ok || len(sec.Fields) != 4 {
		t.Errorf("fields block = %#v", got.Blocks.BlockSet[2])
	}

	status = http.StatusNotFound
	err := (Slack{WebhookURL: hook}).Send(context.Background(), m)
	checkDelivery(t, err, 404, false, 0)
	if strings.Contains(err.Error(), "XXXXSECRET") {
		t.Errorf("webhook URL in error: %v", err)
	}
	status = http.StatusBadGateway
	checkDelivery(t, (Slack{WebhookURL: hook}).Send(context.Background(), m), 502, true, 0)
}

func TestSlackValidate(t *testing.T) {
	tests := []struct {
		s     Slack
		field string
	}{
		{Slack{Token: "xoxb-1", Channel: "C1"}, ""},
		{Slack{WebhookURL: "https://hooks.slack.com/services/x"}, ""},
		{Slack{}, "slack.token"},
		{Slack{Token: "xoxb-1"}, "slack.channel"},
		{Slack{WebhookURL: "hooks.slack.com/x"}, "slack.webhook_url"},
		{Slack{Token: "xoxb-1", Channel: "C1", APIURL: "::"}, "slack.api_url"},
	}
	for _, tt := range tests {
		checkField(t, tt.s.Validate(), tt.field)
	}
	checkField(t, Slack{Token: "x", Channel: "C"}.Send(context.Background(), Message{}), "message.delivery_id")
}
