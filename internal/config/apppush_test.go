package config

import (
	"strings"
	"testing"
)

func TestValidateAppPushAndAdminTokenFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"zero rate", func(c *Config) { c.AppPushRate = 0 }, "app-push-rate must be above zero"},
		{"burst below a batch", func(c *Config) { c.AppPushBurst = c.MaxBatch - 1 }, "app-push-burst (999) must be at least max-batch (1000)"},
		{"token and token file", func(c *Config) { c.AdminToken, c.AdminTokenFile = "t", "f" }, "not both"},
	} {
		c := Default()
		tc.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	c := Default()
	if err := c.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
