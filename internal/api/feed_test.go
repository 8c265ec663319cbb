package api

import (
	"bytes"
	"encoding/json"
	"reflect"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/wire"
)

// customerChange reads a customer change-feed payload (a wire.CustomerChanged) with
// its embedded records decoded, for assertions.
type customerChange struct {
	Op              string                `json:"op"`
	Revision        int64                 `json:"revision"`
	Customer        *wire.Customer        `json:"customer,omitempty"`
	Plan            string                `json:"plan,omitempty"`
	PreviousPlan    string                `json:"previous_plan,omitempty"`
	OverwriteMeters *bool                 `json:"overwrite_meters,omitempty"`
	Entitlement     string                `json:"entitlement,omitempty"`
	Override        *enforcement.Override `json:"override,omitempty"`
	Removed         bool                  `json:"removed,omitempty"`
	Topup           *wire.CustomerTopup   `json:"topup,omitempty"`
}

// Change-feed operations, as internal/customers writes them.
const (
	opUpsert   = "upsert"
	opDelete   = "delete"
	opPlan     = "plan"
	opOverride = "override"
	opTopup    = "topup"
	opVoucher  = "voucher"
	opCap      = "cap"
)

// maxLabelLength is the longest label the API accepts.
const maxLabelLength = 1024

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}
