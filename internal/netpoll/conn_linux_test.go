package netpoll

import (
	"testing"
	"unsafe"
)

// TestConnSize guards the idle-connection budget (docs/decisions/0002):
// conn is most of what an idle device costs, and 112 bytes is its size
// class. A field that pushes it to the next class (128) costs 16 bytes on
// every connection; make that a decision, not an accident.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(conn{}); got > 112 {
		t.Errorf("conn is %d bytes, over its 112-byte size class", got)
	}
}
