package enforcement

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// idHash is the hash customer ids are found by. One hash picks the shard (top byte),
// the slot in the shard's table (low bits) and the slot's tag (the 7 bits below the
// shard's), so a lookup hashes the id once.
type idHash uint64

func (h idHash) shard() uint32 { return uint32(h >> 56) }

// tag is never 0, which marks an empty slot.
func (h idHash) tag() uint8 { return 0x80 | uint8(h>>49) }

// idHasher hashes customer ids with keys drawn at random for each engine, so which
// ids collide cannot be known in advance.
type idHasher struct {
	seed       maphash.Seed
	k0, k1, k2 uint64
}

func newIDHasher() idHasher {
	h := idHasher{seed: maphash.MakeSeed()}
	h.k0, h.k1, h.k2 = maphash.String(h.seed, "k0"), maphash.String(h.seed, "k1"), maphash.String(h.seed, "k2")
	return h
}

// hash returns the hash of id. Ids of up to 16 bytes, the usual ones, are hashed
// inline as wyhash does (two multiply-mixes of the bytes read as words), which costs
// a fraction of a call into maphash; longer ids go to maphash.
func (k *idHasher) hash(id string) idHash {
	n := len(id)
	if n > 16 {
		return idHash(maphash.String(k.seed, id))
	}
	var a, b uint64
	switch {
	case n >= 4:
		q := n >> 3 << 2 // 0 below 8 bytes, else 4: the four words cover every byte
		a = read4(id, 0)<<32 | read4(id, q)
		b = read4(id, n-4)<<32 | read4(id, n-4-q)
	case n > 0:
		a = uint64(id[0])<<16 | uint64(id[n>>1])<<8 | uint64(id[n-1])
	}
	hi, lo := bits.Mul64(a^k.k1, b^k.k0)
	return idHash(mix(lo^k.k2^uint64(n), hi^k.k1))
}

func read4(s string, i int) uint64 {
	s = s[i : i+4]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hashID hashes an id with the engine's keys.
func (e *Engine) hashID(id string) idHash { return e.ids.hash(id) }

// idTable is one shard's customers by primary id: an open-addressing hash table with
// linear probing, holding only customer pointers and a tag byte per slot, since the id
// is the customer's own. A map[string]*customer stores a 16-byte copy of each id's
// header next to the pointer and leaves freed tables behind as it splits: at a
// million customers that is about 70 MiB more. Tags keep probes from reading
// customers whose hash differs.
//
// Reads take no lock, so a call finds its customer without the two atomic
// read-modify-writes of a read lock on the shard. Writers hold the shard's mu and
// never move an entry: removal leaves a tombstone, and a table that fills up is
// rebuilt and swapped in whole. A reader therefore sees each slot either before or
// after a write, and a table it loaded is only ever added to.
type idTable struct {
	cur  atomic.Pointer[idSlots]
	n    int // customers held; read and written under the shard's mu
	dead int // tombstones in cur; likewise
}

// idSlots is one generation of a table.
type idSlots struct {
	tags  []atomic.Uint64 // eight slots' tags a word: 0 empty, tombstone, or idHash.tag
	slots []atomic.Pointer[customer]
}

const tombstone = 1 // a removed customer's slot: probes go on past it

// maxLoad is the fill, in quarters, that slots in use (customers and tombstones) may
// reach: linear probing stays short below three quarters, and a miss always ends at
// an empty slot.
const maxLoad = 3

func (s *idSlots) tag(i uint64) uint8 { return uint8(s.tags[i/8].Load() >> (i % 8 * 8)) }

// setTag writes a slot's tag. Writers only: the read-modify-write is safe because
// they are serialised by the shard's mu.
func (s *idSlots) setTag(i uint64, tag uint8) {
	w, sh := &s.tags[i/8], i%8*8
	w.Store(w.Load()&^(0xff<<sh) | uint64(tag)<<sh)
}

// get returns the customer with id (hash h), or nil. It takes no lock.
func (t *idTable) get(h idHash, id string) *customer {
	s := t.cur.Load()
	if s == nil {
		return nil
	}
	mask := uint64(len(s.slots) - 1)
	tag := h.tag()
	for i := uint64(h) & mask; ; i = (i + 1) & mask {
		switch s.tag(i) {
		case 0:
			return nil
		case tag:
			// A slot's pointer is stored before its tag and cleared after it is
			// tombstoned: nil here is a customer removed meanwhile.
			if c := s.slots[i].Load(); c != nil && c.id == id {
				return c
			}
		}
	}
}

// put adds c, whose id (hash h) the table does not hold yet. k rehashes the
// customers when the table is rebuilt. Caller holds the shard's mu.
func (t *idTable) put(k *idHasher, h idHash, c *customer) {
	s := t.cur.Load()
	if s == nil || (t.n+t.dead+1)*4 > len(s.slots)*maxLoad {
		s = t.rebuild(k)
	}
	s.insert(h, c)
	t.n++
}

// insert stores c in the first free slot of its probe sequence: pointer first, then
// the tag that makes readers look at it.
func (s *idSlots) insert(h idHash, c *customer) {
	mask := uint64(len(s.slots) - 1)
	i := uint64(h) & mask
	for s.tag(i) != 0 {
		i = (i + 1) & mask
	}
	s.slots[i].Store(c)
	s.setTag(i, h.tag())
}

// rebuild swaps in a table holding the customers without tombstones, at most half
// full. Readers still probing the old one find what it held.
func (t *idTable) rebuild(k *idHasher) *idSlots {
	old := t.cur.Load()
	size := 8
	if old != nil {
		size = len(old.slots)
	}
	for (t.n+1)*2 > size {
		size *= 2
	}
	s := &idSlots{tags: make([]atomic.Uint64, size/8), slots: make([]atomic.Pointer[customer], size)}
	if old != nil {
		for i := range old.slots {
			if c := old.slots[i].Load(); c != nil {
				s.insert(k.hash(c.id), c)
			}
		}
	}
	t.cur.Store(s)
	t.dead = 0
	return s
}

// remove drops c (id hash h) if the table holds it. Caller holds the shard's mu.
func (t *idTable) remove(h idHash, c *customer) {
	s := t.cur.Load()
	if s == nil {
		return
	}
	mask := uint64(len(s.slots) - 1)
	for i := uint64(h) & mask; s.tag(i) != 0; i = (i + 1) & mask {
		if s.slots[i].Load() == c {
			s.setTag(i, tombstone)
			s.slots[i].Store(nil)
			t.n--
			t.dead++
			return
		}
	}
}

// each calls visit for every customer in the table. Caller holds the shard's mu.
func (t *idTable) each(visit func(*customer)) {
	s := t.cur.Load()
	if s == nil {
		return
	}
	for i := range s.slots {
		if c := s.slots[i].Load(); c != nil {
			visit(c)
		}
	}
}
