package store

import (
	"context"

	"github.com/google/uuid"
)

// Actor is who makes a change, as the audit log records it: the API key or dashboard
// user (neither for the operator and the CLI) and the request it came in.
type Actor struct {
	KeyID *uuid.UUID
	// UserID is the dashboard user making the change (none for API keys and the CLI).
	UserID    *uuid.UUID
	RequestID string
}

type actorKey struct{}

// WithActor returns ctx carrying the actor; the API's authentication sets it once per
// request, and every audit entry written under ctx names it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom is the actor ctx carries (the zero Actor: none).
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}
