package web

import (
	"testing"

	"github.com/limitr/limitr/internal/web/webtest"
)

// SharedBrowser lets the external test package (which may import internal/api, as
// this one cannot) drive the package's one Chromium.
func SharedBrowser(t *testing.T) *webtest.Browser { return browserFor(t) }
