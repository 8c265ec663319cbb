package channels

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type received struct {
	From string
	To   []string
	Data []byte
}

// smtpBackend stores what it receives; rcptErr, when set, answers RCPT TO.
type smtpBackend struct {
	mu       sync.Mutex
	msgs     []received
	rcptErr  *smtp.SMTPError
	user     string
	password string
}

func (b *smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{b: b}, nil }

type smtpSession struct {
	b      *smtpBackend
	authed bool
	cur    received
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.b.user || pass != s.b.password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.b.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.cur = received{From: from}
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.b.rcptErr != nil {
		return s.b.rcptErr
	}
	s.cur.To = append(s.cur.To, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = data
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, s.cur)
	s.b.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.cur = received{} }
func (s *smtpSession) Logout() error { return nil }

func startSMTP(t *testing.T, be *smtpBackend) int {
	t.Helper()
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestEmailSend(t *testing.T) {
	for _, auth := range []bool{false, true} {
		name := "no auth"
		if auth {
			name = "auth"
		}
		t.Run(name, func(t *testing.T) {
			be := &smtpBackend{}
			e := Email{Host: "127.0.0.1", From: "alerts@limitr.test", To: []string{"ops@acme.test", "cfo@acme.test"}, TLS: "none", Timeout: 5 * time.Second}
			if auth {
				be.user, be.password = "limitr", "s3cret-pass"
				e.Username, e.Password = be.user, be.password
			}
			e.Port = startSMTP(t, be)
			m := testMessage()
			if err := e.Send(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if len(be.msgs) != 1 {
				t.Fatalf("%d messages received", len(be.msgs))
			}
			got := be.msgs[0]
			if got.From != e.From || strings.Join(got.To, ",") != "ops@acme.test,cfo@acme.test" {
				t.Errorf("envelope %s -> %v", got.From, got.To)
			}
			msg, err := mail.ReadMessage(strings.NewReader(string(got.Data)))
			if err != nil {
				t.Fatal(err)
			}
			if id := msg.Header.Get("Message-Id"); id != "<alert_1_chan_2@limitr>" {
				t.Errorf("Message-ID = %q", id)
			}
			if s := msg.Header.Get("Subject"); s != m.Title {
				t.Errorf("Subject = %q", s)
			}
			if !strings.Contains(msg.Header.Get("From"), "alerts@limitr.test") || !strings.Contains(msg.Header.Get("To"), "cfo@acme.test") {
				t.Errorf("From %q To %q", msg.Header.Get("From"), msg.Header.Get("To"))
			}
			parts := readParts(t, msg)
			if p := parts["text/plain"]; !strings.Contains(p, "Customer: acme") || !strings.Contains(p, m.Link) {
				t.Errorf("text/plain = %q", p)
			}
			if p := parts["text/html"]; !strings.Contains(p, "<th align=\"left\">Entitlement</th>") || !strings.Contains(p, `href="https://dash.example/customers/acme"`) {
				t.Errorf("text/html = %q", p)
			}
		})
	}
}

// readParts walks the MIME tree and returns the decoded leaf parts by type.
func readParts(t *testing.T, msg *mail.Message) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(ct string, r io.Reader, cte string)
	walk = func(ct string, r io.Reader, cte string) {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(r, params["boundary"])
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				// multipart.Reader decodes quoted-printable itself.
				walk(p.Header.Get("Content-Type"), p, p.Header.Get("Content-Transfer-Encoding"))
			}
		}
		b, _ := io.ReadAll(r)
		if strings.EqualFold(cte, "base64") {
			t.Fatalf("unexpected base64 part %s", mt)
		}
		out[mt] = string(b)
	}
	walk(msg.Header.Get("Content-Type"), msg.Body, msg.Header.Get("Content-Transfer-Encoding"))
	return out
}

func TestEmailErrors(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		retryable bool
	}{
		{"451 temporary", 451, true},
		{"452 full", 452, true},
		{"550 rejected", 550, false},
		{"553 bad mailbox", 553, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &smtpBackend{rcptErr: &smtp.SMTPError{Code: tt.code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "no"}}
			port := startSMTP(t, be)
			err := Email{Host: "127.0.0.1", Port: port, From: "a@limitr.test", To: []string{"b@acme.test"}, TLS: "none", Timeout: 5 * time.Second}.Send(context.Background(), testMessage())
			checkDelivery(t, err, tt.code, tt.retryable, 0)
		})
	}
	t.Run("bad password is permanent and hidden", func(t *testing.T) {
		be := &smtpBackend{user: "u", password: "right"}
		port := startSMTP(t, be)
		err := Email{Host: "127.0.0.1", Port: port, Username: "u", Password: "wrong-pass-xyz", From: "a@limitr.test", To: []string{"b@acme.test"}, TLS: "none", Timeout: 5 * time.Second}.Send(context.Background(), testMessage())
		if !errors.Is(err, ErrPermanent) {
			t.Fatalf("err = %v, want permanent", err)
		}
		if strings.Contains(err.Error(), "wrong-pass-xyz") {
			t.Errorf("password in error: %v", err)
		}
	})
	t.Run("connection refused is retryable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		err = Email{Host: "127.0.0.1", Port: port, From: "a@limitr.test", To: []string{"b@acme.test"}, TLS: "none", Timeout: 2 * time.Second}.Send(context.Background(), testMessage())
		if !errors.Is(err, ErrRetryable) {
			t.Fatalf("err = %v, want retryable", err)
		}
	})
}

func TestEmailValidate(t *testing.T) {
	ok := Email{Host: "smtp.example", Port: 587, From: "a@limitr.test", To: []string{"b@acme.test"}, TLS: "starttls"}
	mod := func(f func(*Email)) Email { e := ok; f(&e); return e }
	tests := []struct {
		e     Email
		field string
	}{
		{ok, ""},
		{mod(func(e *Email) { e.Host = "" }), "email.host"},
		{mod(func(e *Email) { e.Port = 0 }), "email.port"},
		{mod(func(e *Email) { e.Port = 70000 }), "email.port"},
		{mod(func(e *Email) { e.From = "nope" }), "email.from"},
		{mod(func(e *Email) { e.To = nil }), "email.to"},
		{mod(func(e *Email) { e.To = []string{"b@acme.test", "bad"} }), "email.to[1]"},
		{mod(func(e *Email) { e.TLS = "ssl" }), "email.tls"},
		{mod(func(e *Email) { e.TLS = "" }), "email.tls"},
		{mod(func(e *Email) { e.Password = "p4ss-secret" }), "email.username"},
	}
	for _, tt := range tests {
		err := tt.e.Validate()
		checkField(t, err, tt.field)
		if err != nil && strings.Contains(err.Error(), "p4ss-secret") {
			t.Errorf("password in error: %v", err)
		}
	}
	id := "alert_1:chan_2"
	if MessageID("a b<c>@d") != "a_b_c__d@limitr" || MessageID(id) != MessageID(strings.Clone(id)) {
		t.Error("MessageID not deterministic/sanitized")
	}
}
