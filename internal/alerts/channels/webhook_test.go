package channels

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newSecret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
}

func testMessage() Message {
	return Message{
		DeliveryID: "alert_1:chan_2",
		Title:      "Limit reached",
		Text:       "acme used 100% of api_calls",
		Fields:     []Field{{"Customer", "acme"}, {"Plan", "pro"}, {"Entitlement", "api_calls"}, {"Value / limit", "1000 / 1000"}},
		Link:       "https://dash.example/customers/acme",
		OccurredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Data:       json.RawMessage(`{"type":"limit.reached","customer":"acme"}`),
	}
}

func TestSignKnownVector(t *testing.T) {
	// The Standard Webhooks reference vector.
	sig, err := Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; sig != want {
		t.Fatalf("sig = %s, want %s", sig, want)
	}
}

func TestVerify(t *testing.T) {
	s1, s2 := newSecret(1), newSecret(2)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"a":1}`)
	sig1, _ := Sign(s1, "id1", now, body)
	sig2, _ := Sign(s2, "id1", now, body)
	ts := strconv.FormatInt(now.Unix(), 10)
	tests := []struct {
		name    string
		secrets []string
		id, ts  string
		sig     string
		body    []byte
		now     time.Time
		wantErr error
	}{
		{"ok", []string{s1}, "id1", ts, sig1, body, now, nil},
		{"rotation: new secret, both sigs", []string{s2}, "id1", ts, sig1 + " " + sig2, body, now, nil},
		{"rotation: old secret, both sigs", []string{s1}, "id1", ts, sig1 + " " + sig2, body, now, nil},
		{"receiver knows both", []string{s2, s1}, "id1", ts, sig1, body, now, nil},
		{"tampered body", []string{s1}, "id1", ts, sig1, []byte(`{"a":2}`), now, ErrNoMatchingSignature},
		{"other id", []string{s1}, "id2", ts, sig1, body, now, ErrNoMatchingSignature},
		{"wrong secret", []string{newSecret(3)}, "id1", ts, sig1, body, now, ErrNoMatchingSignature},
		{"old timestamp", []string{s1}, "id1", ts, sig1, body, now.Add(10 * time.Minute), ErrTimestamp},
		{"future timestamp", []string{s1}, "id1", ts, sig1, body, now.Add(-10 * time.Minute), ErrTimestamp},
		{"malformed timestamp", []string{s1}, "id1", "x", sig1, body, now, ErrTimestamp},
		{"no v1", []string{s1}, "id1", ts, "v2," + strings.TrimPrefix(sig1, "v1,"), body, now, ErrNoMatchingSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secrets, tt.id, tt.ts, tt.sig, tt.body, tt.now, 5*time.Minute)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestWebhookSend(t *testing.T) {
	s1, s2 := newSecret(1), newSecret(2)
	now := time.Now()
	tests := []struct {
		name         string
		secrets      []string
		receiverKeys []string
	}{
		{"one secret", []string{s1}, []string{s1}},
		{"rotation, receiver has old", []string{s2, s1}, []string{s1}},
		{"rotation, receiver has new", []string{s2, s1}, []string{s2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Message
			var sigHeader string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				sigHeader = r.Header.Get("webhook-signature")
				if err := Verify(tt.receiverKeys, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), sigHeader, body, time.Now(), 5*time.Minute); err != nil {
					http.Error(w, err.Error(), http.StatusUnauthorized)
					return
				}
				if r.Header.Get("Content-Type") != "application/json" {
					http.Error(w, "content type", http.StatusUnsupportedMediaType)
					return
				}
				if err := json.Unmarshal(body, &got); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			m := testMessage()
			err := Webhook{URL: srv.URL, Secrets: tt.secrets, Now: func() time.Time { return now }}.Send(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(strings.Fields(sigHeader)); n != len(tt.secrets) {
				t.Errorf("%d signatures, want %d", n, len(tt.secrets))
			}
			if got.DeliveryID != m.DeliveryID || got.Title != m.Title || len(got.Fields) != 4 || string(got.Data) != string(m.Data) {
				t.Errorf("received %+v", got)
			}
		})
	}
}

func TestWebhookErrors(t *testing.T) {
	secret := newSecret(1)
	tests := []struct {
		status     int
		retryAfter string
		retryable  bool
		wantAfter  time.Duration
	}{
		{500, "", true, 0},
		{503, "7", true, 7 * time.Second},
		{400, "", false, 0},
		{401, "", false, 0},
		{404, "", false, 0},
		{408, "", true, 0},
		{429, "30", true, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			err := Webhook{URL: srv.URL, Secrets: []string{secret}}.Send(context.Background(), testMessage())
			var de *DeliveryError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want *DeliveryError", err)
			}
			if de.Status != tt.status || de.Retryable != tt.retryable || de.RetryAfter != tt.wantAfter {
				t.Errorf("got %+v", de)
			}
			if errors.Is(err, ErrRetryable) != tt.retryable || errors.Is(err, ErrPermanent) == tt.retryable {
				t.Errorf("errors.Is wrong for %v", err)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
				t.Errorf("secret in error: %v", err)
			}
		})
	}
	t.Run("network error", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		err := Webhook{URL: url, Secrets: []string{secret}}.Send(context.Background(), testMessage())
		if !errors.Is(err, ErrRetryable) {
			t.Fatalf("err = %v, want retryable", err)
		}
	})
}

func TestWebhookValidate(t *testing.T) {
	secret := newSecret(1)
	tests := []struct {
		w     Webhook
		field string
	}{
		{Webhook{URL: "https://x.example/h", Secrets: []string{secret}}, ""},
		{Webhook{Secrets: []string{secret}}, "webhook.url"},
		{Webhook{URL: "ftp://x.example/h", Secrets: []string{secret}}, "webhook.url"},
		{Webhook{URL: "https://x.example/h"}, "webhook.secrets"},
		{Webhook{URL: "https://x.example/h", Secrets: []string{secret, "nope-secret"}}, "webhook.secrets[1]"},
		{Webhook{URL: "https://x.example/h", Secrets: []string{"whsec_!!!"}}, "webhook.secrets[0]"},
	}
	for _, tt := range tests {
		err := tt.w.Validate()
		checkField(t, err, tt.field)
		if err != nil && strings.Contains(err.Error(), "nope-secret") {
			t.Errorf("secret in error: %v", err)
		}
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Errorf("unexpected error %v", err)
		}
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != field {
		t.Errorf("err = %v, want field %s", err, field)
	}
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("validation error %v not permanent", err)
	}
}
