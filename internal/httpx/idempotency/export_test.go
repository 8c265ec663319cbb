package idempotency

// RequestHash exposes requestHash to the external tests.
var RequestHash = requestHash
