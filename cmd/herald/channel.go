package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

const channelUsage = `usage:
  herald app channel set apns --key-p8 FILE --key-id ID --team-id ID --topic BUNDLE [--environment production|sandbox] [--endpoint URL]
  herald app channel set fcm --service-account FILE [--endpoint URL]
  herald app channel set webpush --subject mailto:...|https://... [--vapid-private-key KEY]
  herald app channel set routing [--channel own_first|vendor_first|own_only|vendor_only] [--relay-after SECONDS]
  herald app channel show [apns|fcm|webpush]
  herald app channel delete apns|fcm|webpush
The app is --app-key with --master-secret (or HERALD_APP_KEY, HERALD_MASTER_SECRET).`

// channelCmd manages an app's vendor channel settings
// (/v1/apps/{app_key}/channels).
func channelCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(channelUsage)
	}
	verb, rest := args[0], args[1:]
	var c clientFlags
	fs := newFlags("app channel "+verb, stderr)
	c.register(fs, providerFlag)
	var keyP8, keyID, teamID, topic, env, endpoint, saFile, subject, vapid, policy string
	relayAfter := int64(-1)
	if verb == "set" {
		fs.StringVar(&keyP8, "key-p8", "", "apns: the .p8 signing key file from Apple")
		fs.StringVar(&keyID, "key-id", "", "apns: the key's ID")
		fs.StringVar(&teamID, "team-id", "", "apns: the developer team's ID")
		fs.StringVar(&topic, "topic", "", "apns: the app's bundle ID")
		fs.StringVar(&env, "environment", "production", "apns: production or sandbox")
		fs.StringVar(&endpoint, "endpoint", "", "apns, fcm: the vendor's base URL, to go through a proxy")
		fs.StringVar(&saFile, "service-account", "", "fcm: the service account's JSON key file")
		fs.StringVar(&subject, "subject", "", "webpush: the contact push services may use, mailto: or https:")
		fs.StringVar(&vapid, "vapid-private-key", "", "webpush: the VAPID private key in base64url (generated when empty)")
		fs.StringVar(&policy, "channel", "", "routing: the app's default channel policy")
		fs.Int64Var(&relayAfter, "relay-after", -1, "routing: seconds an own_first push waits for an ack before it is relayed")
	}
	if err := c.parse(fs, rest); err != nil {
		return err
	}
	auth, err := c.providerAuth()
	if err != nil {
		return err
	}
	base := c.server + "/v1/apps/" + c.appKey + "/channels"
	kind := ""
	if len(c.args) > 0 {
		kind = c.args[0]
	}
	var out json.RawMessage
	switch {
	case verb == "show" && kind == "":
		err = do(ctx, "GET", base, auth, nil, &out)
	case verb == "show":
		err = do(ctx, "GET", base+"/"+kind, auth, nil, &out)
	case verb == "delete" && kind != "":
		if err = do(ctx, "DELETE", base+"/"+kind, auth, nil, nil); err == nil {
			fmt.Fprintf(stdout, "%s settings deleted\n", kind)
			return nil
		}
	case verb == "set" && kind == "routing":
		body := map[string]any{}
		if policy != "" {
			body["channel"] = policy
		}
		if relayAfter >= 0 {
			body["relay_after"] = relayAfter
		}
		err = do(ctx, "PATCH", base, auth, body, &out)
	case verb == "set" && kind != "":
		var body map[string]any
		if body, err = channelBody(kind, keyP8, keyID, teamID, topic, env, endpoint, saFile, subject, vapid); err != nil {
			return err
		}
		err = do(ctx, http.MethodPut, base+"/"+kind, auth, body, &out)
	default:
		return errors.New(channelUsage)
	}
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

// channelBody builds the settings of kind from the flags, reading the key
// files.
func channelBody(kind, keyP8, keyID, teamID, topic, env, endpoint, saFile, subject, vapid string) (map[string]any, error) {
	body := map[string]any{}
	if endpoint != "" {
		body["endpoint"] = endpoint
	}
	switch kind {
	case "apns":
		if keyP8 == "" {
			return nil, errors.New("apns needs --key-p8 FILE, --key-id, --team-id and --topic")
		}
		key, err := os.ReadFile(keyP8)
		if err != nil {
			return nil, err
		}
		body["key_p8"], body["key_id"], body["team_id"], body["topic"], body["environment"] = string(key), keyID, teamID, topic, env
	case "fcm":
		if saFile == "" {
			return nil, errors.New("fcm needs --service-account FILE (the JSON key from the Google Cloud console)")
		}
		sa, err := os.ReadFile(saFile)
		if err != nil {
			return nil, err
		}
		if !json.Valid(sa) {
			return nil, fmt.Errorf("%s is not JSON", saFile)
		}
		body["service_account"] = json.RawMessage(sa)
	case "webpush":
		delete(body, "endpoint")
		body["subject"] = subject
		if vapid != "" {
			body["vapid_private_key"] = vapid
		}
	default:
		return nil, fmt.Errorf("no channel %q: apns, fcm, webpush or routing", kind)
	}
	return body, nil
}
