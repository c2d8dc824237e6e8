package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Audience names the devices a message is for.
//
// RegistrationIDs and Aliases are explicit: they are resolved to devices when
// the message is accepted, and each device gets an inbox entry. All and the
// tag fields form a selector: the message is stored once and every device of
// the app that matches when it reads its inbox receives it (fan-out on read).
// When both are present the audience is their union; the platform filter of
// the message applies to all of it.
type Audience struct {
	All             bool     `json:"-"`
	RegistrationIDs []string `json:"registration_id,omitempty"`
	Aliases         []string `json:"alias,omitempty"`
	Tags            []string `json:"tag,omitempty"`     // any of
	TagAnd          []string `json:"tag_and,omitempty"` // all of
	TagNot          []string `json:"tag_not,omitempty"` // none of
}

// Selects reports whether the audience has a selector part, delivered by
// fan-out on read.
func (a *Audience) Selects() bool {
	return a.All || len(a.Tags) > 0 || len(a.TagAnd) > 0 || len(a.TagNot) > 0
}

// Explicit reports whether the audience names devices directly.
func (a *Audience) Explicit() bool { return len(a.RegistrationIDs) > 0 || len(a.Aliases) > 0 }

// Empty reports whether the audience names nobody.
func (a *Audience) Empty() bool { return !a.Selects() && !a.Explicit() }

// Matches reports whether d matches the selector part. It knows nothing of
// the explicit part: those devices have inbox entries instead.
func (a *Audience) Matches(d *Device) bool {
	if a.All {
		return true
	}
	if !a.Selects() {
		return false
	}
	if len(a.Tags) > 0 && !slices.ContainsFunc(a.Tags, d.HasTag) {
		return false
	}
	for _, t := range a.TagAnd {
		if !d.HasTag(t) {
			return false
		}
	}
	return !slices.ContainsFunc(a.TagNot, d.HasTag)
}

// MarshalJSON writes "all" or the object form.
func (a Audience) MarshalJSON() ([]byte, error) {
	if a.All {
		return []byte(`"all"`), nil
	}
	type plain Audience
	return json.Marshal(plain(a))
}

// UnmarshalJSON reads "all" or an object with only the known keys.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s != "all" {
			return fmt.Errorf("%w: audience must be \"all\" or an object, not %q", ErrBadAudience, s)
		}
		*a = Audience{All: true}
		return nil
	}
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: audience must be \"all\" or an object", ErrBadAudience)
	}
	type plain Audience
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAudience, err)
	}
	*a = Audience(p)
	return nil
}
