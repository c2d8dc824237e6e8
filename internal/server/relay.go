package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/relay"
	"github.com/heraldpush/herald/internal/relay/apns"
	"github.com/heraldpush/herald/internal/relay/fcm"
	"github.com/heraldpush/herald/internal/relay/webpush"
)

// secretKeyFile is where a generated secret key is kept in the data
// directory.
const secretKeyFile = "secret-key"

// secretKey returns the key that seals channel credentials: the configured
// one, else the one kept in the data directory, generated on first use.
func secretKey(cfg config.Config) ([]byte, error) {
	if cfg.SecretKey != "" {
		k, err := relay.ParseKey(cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("secret-key: %w", err)
		}
		return k, nil
	}
	path := filepath.Join(cfg.DataDir, secretKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
		key := relay.NewKey()
		_, werr := f.WriteString(key + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
		return relay.ParseKey(key)
	}
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	k, err := relay.ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret key in %s: %w", path, err)
	}
	return k, nil
}

// relayClient is the HTTP client of the senders: the system's trust roots
// (SSL_CERT_FILE and SSL_CERT_DIR point them at a test server's
// certificate), HTTP/2 where the vendor offers it, and long-lived
// connections: APNs asks for one kept open rather than one per push.
func relayClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = time.Hour
	return &http.Client{Transport: t}
}

// buildSender is the relay.Factory: the one place that knows the vendors'
// senders.
func buildSender(client *http.Client) relay.Factory {
	return func(kind push.ChannelKind, config []byte) (relay.Sender, error) {
		switch kind {
		case push.ChannelAPNs:
			var c relay.APNsConfig
			if err := json.Unmarshal(config, &c); err != nil {
				return nil, err
			}
			return apns.New(apns.Options{
				KeyP8: []byte(c.KeyP8), KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic,
				Environment: c.Environment, Endpoint: c.Endpoint,
			})
		case push.ChannelFCM:
			var c relay.FCMConfig
			if err := json.Unmarshal(config, &c); err != nil {
				return nil, err
			}
			return fcm.New(fcm.Options{ServiceAccount: c.ServiceAccount, Endpoint: c.Endpoint, Client: client})
		case push.ChannelWebPush:
			var c relay.WebPushConfig
			if err := json.Unmarshal(config, &c); err != nil {
				return nil, err
			}
			key, err := relay.VAPIDKey(c.VAPIDPrivateKey)
			if err != nil {
				return nil, err
			}
			return webpush.New(webpush.Options{Key: key, Subject: c.Subject, Client: client})
		}
		return nil, fmt.Errorf("no channel %q", kind)
	}
}

// startRelay builds the apps' channel settings and turns the relay on.
func (s *Server) startRelay(cfg config.Config) (*relay.Channels, error) {
	key, err := secretKey(cfg)
	if err != nil {
		return nil, err
	}
	box, err := relay.NewBox(key)
	if err != nil {
		return nil, err
	}
	channels := relay.NewChannels(s.store, box, buildSender(relayClient()), s.log)
	o := delivery.RelayOptions{
		Retry:       relay.Policy{Base: time.Second, Max: cfg.RelayBackoffMax, Attempts: cfg.RelayAttempts},
		SendTimeout: cfg.RelayTimeout, PerChannel: cfg.RelayPerChannel,
	}
	// Other nodes may write jobs to a shared store; one node sends them
	// all (the relay lease) and finds theirs by looking this often.
	o.Poll = sharedPoll(cfg)
	s.deliv.EnableRelay(channels, o)
	return channels, nil
}
