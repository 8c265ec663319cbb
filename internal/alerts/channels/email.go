package channels

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Email sends over SMTP with go-mail: a plain-text and an HTML part.
type Email struct {
	Host               string
	Port               int
	Username, Password string
	From               string
	To                 []string
	TLS                string // none | starttls | tls
	Timeout            time.Duration
	// Dial, when set, makes the SMTP connection (PublicOnlyDialer keeps it off private
	// addresses).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Validate checks the email input, naming the bad field.
func (e Email) Validate() error {
	if strings.TrimSpace(e.Host) == "" {
		return fieldError("email.host", "is required")
	}
	if e.Port < 1 || e.Port > 65535 {
		return fieldError("email.port", "must be between 1 and 65535")
	}
	if _, err := mail.ParseAddress(e.From); err != nil {
		return fieldError("email.from", "must be an email address")
	}
	if len(e.To) == 0 {
		return fieldError("email.to", "at least one recipient is required")
	}
	for i, to := range e.To {
		if _, err := mail.ParseAddress(to); err != nil {
			return fieldError(fmt.Sprintf("email.to[%d]", i), "must be an email address")
		}
	}
	switch e.TLS {
	case "none", "starttls", "tls":
	default:
		return fieldError("email.tls", "must be one of none, starttls, tls")
	}
	if e.Password != "" && e.Username == "" {
		return fieldError("email.username", "is required with a password")
	}
	if e.Timeout < 0 {
		return fieldError("email.timeout", "must not be negative")
	}
	return nil
}

// MessageID is the Message-ID of a delivery, without angle brackets:
// deterministic, so a retried delivery can be deduplicated.
func MessageID(deliveryID string) string {
	var b strings.Builder
	for _, r := range deliveryID {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("-_.+=", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String() + "@limitr"
}

var htmlTemplate = template.Must(template.New("alert").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h2>{{.Title}}</h2>
{{if .Text}}<p>{{.Text}}</p>{{end}}
{{if .Fields}}<table cellpadding="4">{{range .Fields}}<tr><th align="left">{{.Label}}</th><td>{{.Value}}</td></tr>{{end}}</table>{{end}}
{{if .Link}}<p><a href="{{.Link}}">Open in dashboard</a></p>{{end}}
<p style="color:#888">{{.OccurredAt.UTC.Format "2006-01-02 15:04:05 MST"}}</p>
</body></html>
`))

// PlainText renders m as the text/plain part.
func PlainText(m Message) string {
	var b strings.Builder
	if m.Title != "" {
		b.WriteString(m.Title + "\n\n")
	}
	if m.Text != "" {
		b.WriteString(m.Text + "\n\n")
	}
	for _, f := range m.Fields {
		fmt.Fprintf(&b, "%s: %s\n", f.Label, f.Value)
	}
	if m.Link != "" {
		fmt.Fprintf(&b, "\n%s\n", m.Link)
	}
	if !m.OccurredAt.IsZero() {
		fmt.Fprintf(&b, "\n%s\n", m.OccurredAt.UTC().Format("2006-01-02 15:04:05 MST"))
	}
	return b.String()
}

// Send delivers m by SMTP.
func (e Email) Send(ctx context.Context, m Message) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	msg := gomail.NewMsg()
	if err := msg.From(e.From); err != nil {
		return fieldError("email.from", "must be an email address")
	}
	if err := msg.To(e.To...); err != nil {
		return fieldError("email.to", "must be email addresses")
	}
	msg.Subject(m.Title)
	msg.SetMessageIDWithValue(MessageID(m.DeliveryID))
	if !m.OccurredAt.IsZero() {
		msg.SetDateWithValue(m.OccurredAt)
	} else {
		msg.SetDate()
	}
	msg.SetBodyString(gomail.TypeTextPlain, PlainText(m))
	if err := msg.AddAlternativeHTMLTemplate(htmlTemplate, m); err != nil {
		return permanent("email", err)
	}

	opts := []gomail.Option{gomail.WithPort(e.Port)}
	if e.Dial != nil {
		opts = append(opts, gomail.WithDialContextFunc(e.Dial))
	}
	if e.Timeout > 0 {
		opts = append(opts, gomail.WithTimeout(e.Timeout))
	}
	switch e.TLS {
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case "starttls":
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case "tls":
		opts = append(opts, gomail.WithSSL())
	}
	if e.Username != "" {
		auth := gomail.SMTPAuthPlain
		if e.TLS == "none" {
			auth = gomail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(e.Username), gomail.WithPassword(e.Password))
	}
	client, err := gomail.NewClient(e.Host, opts...)
	if err != nil {
		return permanent("email", scrub(err, e.Password))
	}
	return e.classify(client.DialAndSendWithContext(ctx, msg))
}

func (e Email) classify(err error) error {
	if err == nil {
		return nil
	}
	if refused := refusedDestination("email", err); refused != nil {
		return refused
	}
	safe := scrub(err, e.Password)
	code := 0
	var tp *textproto.Error
	var se *gomail.SendError
	switch {
	case errors.As(err, &tp):
		code = tp.Code
	case errors.As(err, &se):
		code = se.ErrorCode()
	}
	if code >= 400 && code < 600 {
		return &DeliveryError{Channel: "email", Status: code, Retryable: code < 500, Err: safe}
	}
	if se != nil && se.IsTemp() {
		return &DeliveryError{Channel: "email", Retryable: true, Err: safe}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &DeliveryError{Channel: "email", Retryable: true, Err: safe}
	}
	// Connection failures (refused, reset, EOF) are worth a retry; a failure
	// we cannot classify is treated the same way rather than dropped.
	return &DeliveryError{Channel: "email", Retryable: true, Err: safe}
}
