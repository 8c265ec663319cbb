package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Errors from the domain services become problems here, one mapping per domain;
// anything unmapped falls through to commonProblem.

// commonProblem maps what every domain can return: invalid input (422 listing every
// field, or 400 when it cannot be read), Postgres being unavailable (503 with
// Retry-After: the client may retry), a caller that went away, and problems built by
// the handler itself. Everything else is a 500 whose cause is logged, never sent.
func commonProblem(err error) error {
	if err == nil {
		return nil
	}
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	var ve *validation.Error
	if errors.As(err, &ve) {
		return problem.Validation(ve.Title, fieldErrors(ve.Fields))
	}
	if errors.Is(err, validation.ErrMalformed) {
		return problem.New(http.StatusBadRequest, strings.TrimPrefix(err.Error(), validation.ErrMalformed.Error()+": "))
	}
	if errors.Is(err, context.Canceled) {
		return err // the error handler records 499
	}
	if pg.IsTransient(err) {
		pr := problem.New(http.StatusServiceUnavailable, "the database is unavailable; retry shortly")
		pr.RetryAfter = 1e9
		return pr
	}
	return err
}

func fieldErrors(fs []validation.FieldError) []problem.FieldError {
	out := make([]problem.FieldError, len(fs))
	for i, f := range fs {
		out[i] = problem.FieldError{Path: f.Path, Message: f.Message}
	}
	return out
}

// customerProblem maps the customers domain's errors.
func customerProblem(err error) error {
	var taken *customers.NameTakenError
	switch {
	case errors.As(err, &taken):
		pb := problem.New(http.StatusConflict, taken.Error()).WithType("conflict")
		pb.Errors = []problem.FieldError{{Path: taken.Field, Message: "\"" + taken.Name + "\" is already used by customer \"" + taken.Owner + "\""}}
		return pb
	case errors.Is(err, customers.ErrExists):
		return problem.New(http.StatusConflict, err.Error()).WithType("conflict")
	case errors.Is(err, customers.ErrNotFound), errors.Is(err, customers.ErrNoOverride), errors.Is(err, customers.ErrNoVoucher),
		errors.Is(err, customers.ErrNoCap):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, customers.ErrNoActivePolicy):
		return problem.New(http.StatusConflict, err.Error()).WithType("no-active-policy")
	}
	return commonProblem(err)
}

// policyProblem maps the policy-versions domain's errors; an invalid document is a
// 422 listing every problem with its document path.
func policyProblem(err error) error {
	var ve *policies.ValidationError
	switch {
	case errors.As(err, &ve):
		errs := make([]problem.FieldError, 0, len(ve.Problems))
		for _, p := range ve.Problems {
			msg := p.Message
			if p.Line > 0 && !strings.Contains(msg, "line ") {
				msg = msg + " (line " + strconv.Itoa(p.Line) + ")"
			}
			errs = append(errs, problem.FieldError{Path: p.Path, Message: msg})
		}
		detail := "the policy is invalid"
		if len(errs) > 1 {
			detail = "the policy has " + strconv.Itoa(len(errs)) + " problems"
		}
		return problem.Validation(detail, errs).WithType("invalid-policy")
	case errors.Is(err, pgstore.ErrNoRollbackTarget), errors.Is(err, pgstore.ErrNeverPublished):
		return problem.New(http.StatusConflict, err.Error()).WithType("no-rollback-target")
	case errors.Is(err, pgstore.ErrNoActivePolicy):
		return problem.New(http.StatusNotFound, err.Error()).WithType("no-active-policy")
	case errors.Is(err, pgstore.ErrNotFound):
		return problem.New(http.StatusNotFound, err.Error())
	}
	return commonProblem(err)
}

// notifier wakes other processes over the bus after the domains commit. A lost
// wake-up only delays work: followers and workers also poll Postgres.
type notifier struct{ s *Server }

// ChangeCommitted wakes every replica's change-feed followers (SDK streams).
func (n notifier) ChangeCommitted(ctx context.Context, tenantID, envID uuid.UUID, changeID int64) {
	ch := wire.ChangesChannel(tenantID.String(), envID.String())
	if err := n.s.bus.Publish(context.WithoutCancel(ctx), ch, []byte(strconv.FormatInt(changeID, 10))); err != nil {
		n.s.logger.Warn("api: publishing a change wake-up failed; followers will catch up by polling", "err", err, "channel", ch)
	}
}

// UsageCommitted queues a wake-up for the aggregation workers, published off the
// request path so a slow or absent Redis never delays an acknowledgement; when the
// queue is full the wake-up is dropped (workers also poll).
func (n notifier) UsageCommitted(_ context.Context, tenantID, envID uuid.UUID) {
	select {
	case n.s.usageWake <- tenantID.String() + ":" + envID.String():
	default:
	}
}

// environmentOf is the store form of an environment a principal acts in.
func environmentOf(tenantID uuid.UUID, envID uuid.UUID, name string) store.Environment {
	return store.Environment{ID: envID, TenantID: tenantID, Name: name}
}
