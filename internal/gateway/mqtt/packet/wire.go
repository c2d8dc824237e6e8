package packet

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"
)

// reader consumes the data types of spec §1.5 from a packet body. It keeps
// no state but the unread rest, and every method fails with a malformed
// error rather than reading past the end: the body came off the network.
type reader struct {
	b []byte
}

func (r *reader) u8() (byte, error) {
	if len(r.b) < 1 {
		return 0, errShort
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) u16() (uint16, error) {
	if len(r.b) < 2 {
		return 0, errShort
	}
	v := uint16(r.b[0])<<8 | uint16(r.b[1])
	r.b = r.b[2:]
	return v, nil
}

func (r *reader) u32() (uint32, error) {
	if len(r.b) < 4 {
		return 0, errShort
	}
	v := uint32(r.b[0])<<24 | uint32(r.b[1])<<16 | uint32(r.b[2])<<8 | uint32(r.b[3])
	r.b = r.b[4:]
	return v, nil
}

// varint reads a variable byte integer. Inside a body, running out of bytes
// is malformed, not a reason to wait.
func (r *reader) varint() (int, error) {
	v, n, err := parseVarint(r.b)
	if err != nil {
		if errors.Is(err, ErrNeedMore) {
			return 0, errShort
		}
		return 0, err
	}
	r.b = r.b[n:]
	return v, nil
}

// binary reads Binary Data (a 2-byte length and that many bytes). The result
// aliases the body and is never nil, so that "present but empty" survives.
func (r *reader) binary() ([]byte, error) {
	n, err := r.u16()
	if err != nil {
		return nil, err
	}
	if len(r.b) < int(n) {
		return nil, errShort
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

// str reads a UTF-8 Encoded String, refusing ill-formed UTF-8 and U+0000 as
// a malformed packet (spec §1.5.4) before anything is allocated for it.
func (r *reader) str() (string, error) {
	b, err := r.binary()
	if err != nil {
		return "", err
	}
	if !validUTF8(b) {
		return "", errUTF8
	}
	return string(b), nil
}

// validUTF8 reports whether b is well-formed UTF-8 without U+0000. Go's
// decoder already refuses surrogates and overlong forms, which §1.5.4 also
// forbids; both scans have fast paths for ASCII, which topics mostly are.
func validUTF8(b []byte) bool { return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 }

// validUTF8String is validUTF8 for a string, used when encoding.
func validUTF8String(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// checkString checks that s can be sent as a UTF-8 Encoded String.
func checkString(s string) error {
	if len(s) > 0xffff {
		return errEncodeString
	}
	if !validUTF8String(s) {
		return errUTF8
	}
	return nil
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendString appends s with its 2-byte length; the caller has checked it.
func appendString(dst []byte, s string) []byte {
	return append(appendU16(dst, uint16(len(s))), s...)
}

// appendBinary appends b with its 2-byte length; the caller has checked it.
func appendBinary(dst []byte, b []byte) []byte {
	return append(appendU16(dst, uint16(len(b))), b...)
}
