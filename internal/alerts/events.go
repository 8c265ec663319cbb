package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Customers reads customer records with their resolved plans (the customers domain).
type Customers interface {
	RecordsByUID(ctx context.Context, env store.Environment, p *policies.Policy, uids []uuid.UUID) ([]store.Customer, error)
}

// SetCustomers gives event ingest its customer lookups.
func (s *Service) SetCustomers(c Customers) { s.customers = c }

const maxEventPayload = 16 << 10

// ValidateEventBatch checks a forwarded batch, naming every bad field.
func ValidateEventBatch(b *wire.EventBatch) error {
	var errs validation.Errors
	errs.AddField(validation.Required("instance_id", b.InstanceID))
	if len(b.InstanceID) > wire.MaxInstance {
		errs.Addf("instance_id", "is longer than %d bytes", wire.MaxInstance)
	}
	if b.Sequence < 1 {
		errs.Add("sequence", "must be at least 1")
	}
	if b.PolicyVersion < 0 {
		errs.Add("policy_version", "must not be negative")
	}
	if len(b.Events) > wire.MaxEvents {
		errs.Addf("events", "at most %d events per batch, got %d", wire.MaxEvents, len(b.Events))
	}
	for i, e := range b.Events {
		if errs.Len() >= 20 {
			break
		}
		at := func(f string) string { return fmt.Sprintf("events[%d].%s", i, f) }
		errs.AddField(validation.Required(at("type"), e.Type))
		errs.AddField(validation.Required(at("customer"), e.Customer))
		for f, v := range map[string]string{"notification": e.Notification, "source": e.Source, "entitlement": e.Entitlement,
			"plan": e.Plan, "cap_id": e.CapID, "caller": e.Caller} {
			errs.AddField(validation.Text(at(f), v, validation.MaxIDLength))
		}
		if e.Count < 1 {
			errs.Add(at("count"), "must be at least 1")
		}
		if e.At.IsZero() {
			errs.Add(at("at"), "is required")
		}
		if len(e.Payload) > 0 {
			if len(e.Payload) > maxEventPayload {
				errs.Addf(at("payload"), "is larger than %d bytes", maxEventPayload)
			} else if _, fe := validation.JSONObject(at("payload"), e.Payload, maxEventPayload); fe != nil {
				errs.AddField(fe)
			}
		}
	}
	return errs.Err("invalid event batch")
}

// IngestEvents stores a forwarded batch once per (instance, sequence) and fires the
// environment's cap_hit and notification rules on it, in one transaction: the
// acknowledgement means the events and the alerts they raised are committed.
func (s *Service) IngestEvents(ctx context.Context, env store.Environment, b wire.EventBatch) (wire.EventAck, error) {
	if err := ValidateEventBatch(&b); err != nil {
		return wire.EventAck{}, err
	}
	ack := wire.EventAck{Sequence: b.Sequence}
	// Read-only lookups first, on their own connections: the transaction below must
	// not wait for a second connection while it holds one (under load, every
	// connection of the pool would end up waiting).
	p, err := s.activePolicy(ctx, env)
	if err != nil {
		return ack, err
	}
	subjects, err := s.eventSubjects(ctx, env, p, b.Events)
	if err != nil {
		return ack, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `insert into sdk_event_batches (tenant_id, environment_id, instance_id, sequence, events)
			values ($1, $2, $3, $4, $5) on conflict do nothing`, env.TenantID, env.ID, b.InstanceID, b.Sequence, len(b.Events))
		if err != nil {
			return fmt.Errorf("alerts: event batch: %w", err)
		}
		if tag.RowsAffected() == 0 {
			ack.Duplicate = true
			return nil
		}
		if err := insertEvents(ctx, tx, env, b, subjects); err != nil {
			return err
		}
		ack.Accepted = len(b.Events)
		fired, err := s.FireTx(ctx, tx, env, eventObservations(p, b.Events, subjects))
		ack.Alerts = fired.Alerts
		return err
	})
	return ack, err
}

// eventSubject is what an event's customer is to the server.
type eventSubject struct {
	Subject
	period  billing.Period // the billing period now
	created time.Time
	anchor  time.Time
	loc     *time.Location
}

// eventSubjects resolves the events' customers (by id or alt id) with their plans and
// the billing period each event falls in; unknown customers are absent.
func (s *Service) eventSubjects(ctx context.Context, env store.Environment, p *policies.Policy, evs []wire.Event) (map[string]eventSubject, error) {
	names := make([]string, 0, len(evs))
	seen := map[string]bool{}
	for _, e := range evs {
		if !seen[e.Customer] {
			seen[e.Customer] = true
			names = append(names, e.Customer)
		}
	}
	found, err := store.ResolveUsageCustomers(ctx, s.pool, env.TenantID, env.ID, names)
	if err != nil {
		return nil, fmt.Errorf("alerts: resolve customers: %w", err)
	}
	out := make(map[string]eventSubject, len(found))
	if len(found) == 0 || s.customers == nil {
		return out, nil
	}
	uids := make([]uuid.UUID, 0, len(found))
	for _, c := range found {
		uids = append(uids, c.UID)
	}
	recs, err := s.customers.RecordsByUID(ctx, env, p, uids)
	if err != nil {
		return nil, fmt.Errorf("alerts: load customers: %w", err)
	}
	byUID := make(map[uuid.UUID]store.Customer, len(recs))
	for _, r := range recs {
		byUID[r.UID] = r
	}
	for name, c := range found {
		r, ok := byUID[c.UID]
		if !ok {
			continue
		}
		loc := time.UTC
		if r.Timezone != "" {
			if l, err := billing.LoadLocation(r.Timezone); err == nil {
				loc = l
			}
		} else if p != nil && p.Location != nil {
			loc = p.Location
		}
		out[name] = eventSubject{Subject: Subject{UID: r.UID, ID: r.ID, Type: r.Type, Plan: r.ResolvedPlan},
			period: billing.PeriodAt(time.Now(), r.CreatedAt, r.BillingAnchor, loc), created: r.CreatedAt, anchor: r.BillingAnchor, loc: loc}
	}
	return out, nil
}

func insertEvents(ctx context.Context, tx pgx.Tx, env store.Environment, b wire.EventBatch, subjects map[string]eventSubject) error {
	rows := make([][]any, 0, len(b.Events))
	for _, e := range b.Events {
		var uid *uuid.UUID
		id := e.Customer
		if sub, ok := subjects[e.Customer]; ok {
			u := sub.UID
			uid, id = &u, sub.ID
		}
		payload := e.Payload
		if len(bytes.TrimSpace(payload)) == 0 {
			payload = json.RawMessage(`{}`)
		}
		rows = append(rows, []any{env.TenantID, env.ID, b.InstanceID, b.Sequence, uid, id, e.Type, e.Notification, e.Source,
			e.Entitlement, e.Plan, e.CapID, e.At.UTC(), e.Count, []byte(payload)})
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"sdk_events"}, []string{"tenant_id", "environment_id", "instance_id", "sequence",
		"customer_uid", "customer_id", "type", "notification", "source", "entitlement", "plan", "cap_id", "at", "count", "payload"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("alerts: store events: %w", err)
	}
	return nil
}

// eventObservations turns the events of known customers that a rule kind reads into
// observations: cap-limit feeds cap_hit, a notification feeds notification, and a
// denial at a limit (meter-limit) or a soft limit crossed (meter-overage) feeds
// usage_percent, as the percent of the limit the call reached, in the meter's period:
// the same key the worker's evaluation of aggregated usage uses, so whichever sees a
// crossing first fires it and the other finds it fired.
func eventObservations(p *policies.Policy, evs []wire.Event, subjects map[string]eventSubject) []Observation {
	var out []Observation
	for _, e := range evs {
		sub, ok := subjects[e.Customer]
		if !ok {
			continue
		}
		var payload map[string]any
		if len(e.Payload) > 0 {
			_ = json.Unmarshal(e.Payload, &payload) // validated as an object
		}
		data := map[string]any{"type": e.Type, "source": e.Source, "customer": sub.ID, "plan": sub.Plan,
			"entitlement": e.Entitlement, "count": e.Count, "at": e.At.UTC().Format(time.RFC3339Nano), "event": payload}
		o := Observation{Customer: sub.Subject, Entitlement: e.Entitlement, Key: e.CapID, Notification: e.Notification,
			At: e.At, PeriodStart: sub.period.Start, PeriodEnd: sub.period.End, Data: data}
		meter, _ := payload["meter"].(map[string]any)
		value, limit := number(meter["value"]), number(meter["limit"])
		if value != nil {
			data["value"] = *value
		}
		if limit != nil {
			data["limit"] = *limit
		}
		switch {
		case e.Notification != "":
			o.Kind = KindNotification
			data["notification"] = e.Notification
		case e.Type == enforcement.EventCapLimit:
			o.Kind = KindCapHit
		case e.Type == enforcement.EventMeterLimit || e.Type == enforcement.EventMeterOverage:
			reached := value
			if e.Type == enforcement.EventMeterLimit {
				reached = number(meter["invalid"])
			}
			start, ok := meterPeriod(p, sub, e)
			if reached == nil || limit == nil || *limit <= 0 || !ok {
				continue
			}
			pct, err := num.FromFloat64(100 * *reached / *limit)
			lim, err2 := num.FromFloat64(*limit)
			if err != nil || err2 != nil {
				continue
			}
			o.Kind, o.Value, o.Limit, o.PeriodStart, o.PeriodEnd = KindUsagePercent, pct, lim, start, time.Time{}
			data["percent"] = num.Float64(pct)
		default:
			continue
		}
		out = append(out, o)
	}
	return out
}

// meterPeriod is the start of the event's meter period: as the SDK reports it, else
// from the customer's plan in the active policy.
func meterPeriod(p *policies.Policy, sub eventSubject, e wire.Event) (time.Time, bool) {
	if e.PeriodStart != nil {
		return e.PeriodStart.UTC(), true
	}
	if p == nil {
		return time.Time{}, false
	}
	ce := p.PlanEntitlement(p.Plan(sub.Plan), e.Entitlement)
	if ce == nil || ce.Limit == nil {
		return time.Time{}, false
	}
	if !ce.Limit.Resets() {
		return sub.created.UTC(), true
	}
	return ce.Limit.Reset.CurrentStart(sub.created, e.At, sub.loc, sub.anchor).UTC(), true
}

// number reads a JSON number.
func number(v any) *float64 {
	f, ok := v.(float64)
	if !ok {
		return nil
	}
	return &f
}
