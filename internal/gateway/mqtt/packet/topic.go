package packet

import "strings"

// CheckTopicName reports whether name may be the topic of a PUBLISH or a
// will message (spec §4.7): at least one byte, well-formed UTF-8 without
// U+0000, and no wildcard. It returns nil or an *Error with
// ReasonTopicNameInvalid (ReasonMalformedPacket for bad UTF-8).
func CheckTopicName(name string) error {
	if err := checkString(name); err != nil {
		return err
	}
	if name == "" || hasWildcard(name) {
		return errTopicName
	}
	return nil
}

// hasWildcard reports whether s contains '+' or '#'.
func hasWildcard(s string) bool {
	return strings.IndexByte(s, '+') >= 0 || strings.IndexByte(s, '#') >= 0
}

// CheckTopicFilter reports whether filter may be subscribed to (spec §4.7):
// "#" only as the whole last level, "+" only as a whole level, and, in 5.0, a
// shared subscription "$share/{name}/{filter}" with a non-empty name free of
// wildcards. It returns nil or an *Error with ReasonTopicFilterInvalid
// (ReasonMalformedPacket for bad UTF-8).
func CheckTopicFilter(filter string, version byte) error {
	if err := checkString(filter); err != nil {
		return err
	}
	if version >= Version5 {
		if rest, ok := strings.CutPrefix(filter, sharePrefix); ok {
			name, f, ok := strings.Cut(rest, "/")
			if !ok || name == "" || strings.ContainsAny(name, "+#") {
				return errTopicFilter
			}
			filter = f
		}
	}
	if !validFilter(filter) {
		return errTopicFilter
	}
	return nil
}

// sharePrefix starts a shared subscription's filter in 5.0 (spec §4.8.2).
// In 3.1.1 it has no meaning and "$share" is an ordinary first level.
const sharePrefix = "$share/"

// isShared reports whether filter is a 5.0 shared subscription.
func isShared(filter string, version byte) bool {
	return version >= Version5 && strings.HasPrefix(filter, sharePrefix)
}

// validFilter checks wildcard placement in one pass without splitting, so
// validation allocates nothing. The wildcards and '/' are ASCII, so a byte
// scan is exact on UTF-8.
func validFilter(s string) bool {
	if s == "" {
		return false
	}
	level := 0 // index where the current level starts
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '/':
			level = i + 1
		case '+':
			if i != level || (i+1 < len(s) && s[i+1] != '/') {
				return false
			}
		case '#':
			if i != level || i != len(s)-1 {
				return false
			}
		}
	}
	return true
}
