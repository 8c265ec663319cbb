package usage

import (
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/store"
)

type storeUsageCustomer = store.UsageCustomer

func storeCustomer(id string, created time.Time) store.UsageCustomer {
	return store.UsageCustomer{ID: id, UID: uuid.New(), CreatedAt: created}
}
