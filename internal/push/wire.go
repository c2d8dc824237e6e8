package push

import (
	"encoding/json"
	"time"
)

// Delivered is a message as a device receives it, on every transport.
type Delivered struct {
	ID           string          `json:"id"`
	Notification *Notification   `json:"notification,omitempty"`
	Message      json.RawMessage `json:"message,omitempty"`
	Priority     Priority        `json:"priority,omitempty"`
	CollapseID   string          `json:"collapse_id,omitempty"`
	SentAt       time.Time       `json:"sent_at"`
	ExpiresAt    time.Time       `json:"expires_at"`
}

// Delivered returns m in the form devices receive.
func (m *Message) Delivered() Delivered {
	return Delivered{
		ID:           m.ID,
		Notification: m.Notification,
		Message:      m.Data,
		Priority:     m.Priority,
		CollapseID:   m.CollapseID,
		SentAt:       m.SendAt,
		ExpiresAt:    m.ExpiresAt,
	}
}
