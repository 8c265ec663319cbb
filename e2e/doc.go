// Package e2e holds the end-to-end and fault-injection tests of cloud sync: the API,
// the aggregation worker and several SDK instances in one `go test`, against real
// Postgres and Redis on 127.0.0.1 (scripts/services.sh), with faults injected by
// killing processes, stopping Redis and cutting connections through Proxy.
//
// TestEndToEnd is the happy path; TestAPIKilledMidStream, TestWorkerKilledMidBatch,
// TestRedisStopped, TestPostgresOutage and TestSpillReplayAfterRestart each inject one
// kind of fault and check that the server's totals equal what the SDKs allowed,
// exactly. TestInvoiceFleetContract checks that invoices are rated on the server: the
// same usage served by one instance or split over three gets the same invoice, to the
// cent, equal to the single instance's margin snapshot.
//
// The tests skip when LIMITR_TEST_DATABASE_URL is not set; -short shrinks them to a few
// seconds.
package e2e
