package enforcement

import "hash/maphash"

// idHash is the hash customer ids are found by. One hash picks the shard (top byte),
// the slot in the shard's table (low bits) and the slot's tag (the 7 bits below the
// shard's), so a lookup hashes the id once.
type idHash uint64

func (h idHash) shard() uint32 { return uint32(h >> 56) }

// tag is never 0, which marks an empty slot.
func (h idHash) tag() uint8 { return 0x80 | uint8(h>>49) }

// hashID hashes an id with the engine's seed.
func (e *Engine) hashID(id string) idHash { return idHash(maphash.String(e.idSeed, id)) }

// idTable is one shard's customers by primary id: an open-addressing hash table with
// linear probing, holding only customer pointers and a tag byte per slot, since the id
// is the customer's own. A map[string]*customer stores a 16-byte copy of each id's
// header next to the pointer and leaves freed tables behind as it splits: at a
// million customers that is about 70 MiB more. Tags keep probes from reading
// customers whose hash differs. Guarded by the shard's mu.
type idTable struct {
	tags  []uint8     // 0: empty; else the slot's idHash.tag
	slots []*customer // len(slots) == len(tags), a power of two
	n     int
}

// maxLoad is the fill, in quarters, past which the table doubles: linear probing
// stays short below three quarters.
const maxLoad = 3

// get returns the customer with id (hash h), or nil.
func (t *idTable) get(h idHash, id string) *customer {
	if t.n == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	tag := h.tag()
	for i := uint64(h) & mask; ; i = (i + 1) & mask {
		switch t.tags[i] {
		case 0:
			return nil
		case tag:
			if c := t.slots[i]; c.id == id {
				return c
			}
		}
	}
}

// put adds c, whose id (hash h) the table does not hold yet. seed rehashes the
// customers when the table grows.
func (t *idTable) put(seed maphash.Seed, h idHash, c *customer) {
	if (t.n+1)*4 > len(t.slots)*maxLoad {
		t.grow(seed)
	}
	t.insert(h, c)
	t.n++
}

func (t *idTable) insert(h idHash, c *customer) {
	mask := uint64(len(t.slots) - 1)
	i := uint64(h) & mask
	for t.tags[i] != 0 {
		i = (i + 1) & mask
	}
	t.tags[i], t.slots[i] = h.tag(), c
}

func (t *idTable) grow(seed maphash.Seed) {
	tags, slots := t.tags, t.slots
	size := max(8, 2*len(slots))
	t.tags, t.slots = make([]uint8, size), make([]*customer, size)
	for i, c := range slots {
		if tags[i] != 0 {
			t.insert(idHash(maphash.String(seed, c.id)), c)
		}
	}
}

// remove drops c (id hash h) if the table holds it, shifting the entries after it
// back so no probe sequence is broken (no tombstones).
func (t *idTable) remove(seed maphash.Seed, h idHash, c *customer) {
	if t.n == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	i := uint64(h) & mask
	for t.slots[i] != c {
		if t.tags[i] == 0 {
			return
		}
		i = (i + 1) & mask
	}
	// Knuth's algorithm R: an entry after the hole moves into it unless its home slot
	// lies cyclically in (hole, entry].
	for j := i; ; {
		j = (j + 1) & mask
		if t.tags[j] == 0 {
			break
		}
		home := uint64(maphash.String(seed, t.slots[j].id)) & mask
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		t.tags[i], t.slots[i] = t.tags[j], t.slots[j]
		i = j
	}
	t.tags[i], t.slots[i] = 0, nil
	t.n--
}

// each calls visit for every customer in the table.
func (t *idTable) each(visit func(*customer)) {
	for i, c := range t.slots {
		if t.tags[i] != 0 {
			visit(c)
		}
	}
}
