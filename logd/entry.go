package logd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind says what an entry carries.
type Kind uint8

const (
	KindInput  Kind = 1 // a chunk of a replica's input (stdin bytes, a request)
	KindTick   Kind = 2 // the log's clock advanced: Time is the new time
	KindSeed   Kind = 3 // Payload: 8 bytes, the seed of every entropy stream
	KindConfig Kind = 4 // Payload: JSON settings of the run (epoch, image, command)
	KindEnd    Kind = 5 // end of the stream; nothing follows
	KindEOF    Kind = 6 // the input closed (stdin's end); ticks may follow

	// A served stream's connections (lockstep serve): each payload starts
	// with the connection's number, 8 bytes big-endian (ConnID).
	KindOpen  Kind = 7 // a client connected
	KindData  Kind = 8 // bytes the client sent, after the number
	KindClose Kind = 9 // the client closed its side (or went away)
	// KindStop stops the run: at the first point after it where every
	// thread waits, the runtime kills the container.
	KindStop Kind = 10
	// KindFetch records, in the providers' fetch mode (docs/egress.md),
	// what one provider's own connection for an outbound connection got:
	// the connection's number (8 bytes), the fetcher's index (1 byte), an
	// event ('o' the dial's errno, 4 bytes; 'd' bytes it read; 'c' its
	// end, with an errno or none) and its bytes. The replicas are not fed
	// it: the data entries carry what a majority of the fetches got.
	KindFetch Kind = 11

	lastKind = KindFetch
)

// EgressConn marks the number of a connection the run's program made out
// of the run (egress, docs/egress.md): the guard dialed it, and its entries
// carry what the remote side did. An egress open entry's payload is the
// number, the result of the guard's dial (an errno, 4 bytes big-endian: 0
// when it connected), then the address dialed; its data entries are the
// bytes the remote sent; its close entry says the remote closed its side,
// and a close with an errno (4 more bytes: ECONNRESET) that it ended so.
const EgressConn = uint64(1) << 63

// ConnID is the connection number an open, data or close entry's payload
// starts with.
func ConnID(p []byte) uint64 { return binary.BigEndian.Uint64(p) }

// ConnEntry makes a connection's entry: its number, then data.
func ConnEntry(k Kind, t int64, conn uint64, data []byte) Entry {
	p := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(data)), conn)
	return Entry{Kind: k, Time: t, Payload: append(p, data...)}
}

func (k Kind) String() string {
	switch k {
	case KindInput:
		return "input"
	case KindTick:
		return "tick"
	case KindSeed:
		return "seed"
	case KindConfig:
		return "config"
	case KindEnd:
		return "end"
	case KindEOF:
		return "eof"
	case KindOpen:
		return "open"
	case KindData:
		return "data"
	case KindClose:
		return "close"
	case KindStop:
		return "stop"
	case KindFetch:
		return "fetch"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k := KindInput; k <= lastKind; k++ {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown entry kind %q (want input, tick, seed, config, end, eof, open, data, close, stop or fetch)", s)
}

// EntryVersion is the version byte of the entry encoding.
const EntryVersion = 1

// MaxPayload bounds an entry's payload: larger inputs are split.
const MaxPayload = 1 << 20

// Entry is one record of a stream. Seq numbers entries from 0 with no gap;
// Time is the log's clock (ns since the Unix epoch), never decreasing.
type Entry struct {
	Seq     uint64
	Kind    Kind
	Time    int64
	Payload []byte
}

// Encoding (docs/log-format.md): version (1 byte) | kind (1) | seq
// (uvarint) | time (varint) | payload length (uvarint) | payload. The
// record hash of the Merkle tree is computed over exactly these bytes.

// Marshal encodes e.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(e.Payload))
	b = append(b, EntryVersion, byte(e.Kind))
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendVarint(b, e.Time)
	b = binary.AppendUvarint(b, uint64(len(e.Payload)))
	return append(b, e.Payload...), nil
}

func (e *Entry) check() error {
	switch {
	case e.Kind < KindInput || e.Kind > lastKind:
		return fmt.Errorf("entry %d: %v", e.Seq, e.Kind)
	case (e.Kind == KindOpen || e.Kind == KindClose || e.Kind == KindData) && len(e.Payload) < 8:
		return fmt.Errorf("entry %d: a %v entry starts with its connection's 8-byte number (it has %d bytes)", e.Seq, e.Kind, len(e.Payload))
	case e.Kind == KindFetch && (len(e.Payload) < 10 || ConnID(e.Payload)&EgressConn == 0):
		return fmt.Errorf("entry %d: a fetch entry starts with an outbound connection's 8-byte number, the fetcher's index and an event (it has %d bytes)", e.Seq, len(e.Payload))
	case (e.Kind == KindOpen || e.Kind == KindClose) && !connSize(ConnID(e.Payload), e.Kind, len(e.Payload)):
		return fmt.Errorf("entry %d: a %v entry of %d bytes: a served connection's carries its 8-byte number only; an outbound one's (docs/egress.md) open the number, an errno and the address, and its close the number and at most an errno", e.Seq, e.Kind, len(e.Payload))
	case len(e.Payload) > MaxPayload:
		return fmt.Errorf("entry %d: payload of %d bytes is over the 1 MiB limit: split it", e.Seq, len(e.Payload))
	case e.Kind == KindSeed && len(e.Payload) != 8:
		return fmt.Errorf("entry %d: a seed entry carries 8 bytes, not %d", e.Seq, len(e.Payload))
	case e.Time < 0:
		return fmt.Errorf("entry %d: negative time", e.Seq)
	}
	return nil
}

// connSize reports whether an open or close entry of connection conn may
// have n bytes.
func connSize(conn uint64, k Kind, n int) bool {
	switch {
	case conn&EgressConn == 0:
		return n == 8
	case k == KindOpen:
		return n >= 12
	}
	return n == 8 || n == 12
}

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed entry")

// UnmarshalEntry decodes one entry; b must hold exactly one. The entry's
// payload is b's tail, not a copy: b must not change after.
func UnmarshalEntry(b []byte) (Entry, error) {
	e, _, err := unmarshalEntry(b)
	return e, err
}

// unmarshalEntry is UnmarshalEntry, also returning the header's length.
func unmarshalEntry(b []byte) (e Entry, head int, err error) {
	all := b
	bad := func(what string) (Entry, int, error) { return Entry{}, 0, fmt.Errorf("%w: %s", ErrMalformed, what) }
	if len(b) < 2 {
		return bad("truncated header")
	}
	if b[0] != EntryVersion {
		return bad(fmt.Sprintf("version %d (this build reads version %d)", b[0], EntryVersion))
	}
	e = Entry{Kind: Kind(b[1])}
	b = b[2:]
	var n int
	if e.Seq, n = binary.Uvarint(b); n <= 0 {
		return bad("sequence number")
	}
	b = b[n:]
	if e.Time, n = binary.Varint(b); n <= 0 {
		return bad("time")
	}
	b = b[n:]
	size, n := binary.Uvarint(b)
	if n <= 0 {
		return bad("payload length")
	}
	b = b[n:]
	if size > MaxPayload || size != uint64(len(b)) {
		return bad(fmt.Sprintf("payload length %d with %d bytes left", size, len(b)))
	}
	head = len(all) - len(b)
	e.Payload = all[head:]
	if err := e.check(); err != nil {
		return Entry{}, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return e, head, nil
}

// DecodeEntry decodes b and checks that it is the one encoding of its
// entry (no padded varints), so that one entry has one record hash.
func DecodeEntry(b []byte) (Entry, error) {
	e, head, err := unmarshalEntry(b)
	if err != nil {
		return e, err
	}
	// Each varint decodes to one value, and of its encodings only the
	// shortest is canonical: a header of the shortest length is the one.
	if head != 2+uvarintLen(e.Seq)+varintLen(e.Time)+uvarintLen(uint64(len(e.Payload))) {
		return Entry{}, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	return e, nil
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

func varintLen(v int64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutVarint(b[:], v)
}
