package main

import (
	"context"
	"testing"
)

// The quick start is what `make demo` shows first; it must keep running.
func TestQuickstartRuns(t *testing.T) {
	if err := run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
