// Package migrations holds the control plane's SQL schema, embedded into the binaries
// so `api migrate up` (or the API at start-up) can apply it without files on disk.
package migrations

import "embed"

// FS holds the golang-migrate files: NNNN_name.up.sql and NNNN_name.down.sql.
//
//go:embed *.sql
var FS embed.FS
