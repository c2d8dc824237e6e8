// Command herald is Herald's one binary: the server and the tools around it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `herald: a self-hosted push notification service

Usage:
  herald serve [flags]               run a node (herald serve -h for flags)
  herald app create NAME             create an app; prints its app_key and master_secret
  herald app channel set|show|delete  an app's APNs, FCM and Web Push settings and channel policy
  herald send [audience] [content]   push a message (herald send -h)
  herald report MSG_ID               a message's delivery report
  herald recall MSG_ID               stop a message reaching devices that do not have it yet
  herald device show|delete ID       a device's registration, or delete it
  herald listen [flags]              act as a device: register, receive, print, ack
  herald bench WORKLOAD [flags]      load tests: conns, fanout, relay, cluster (herald bench -h)
  herald backup [-o FILE]            a running node's embedded store, as a tar
  herald restore --data DIR FILE     unpack a backup into a new data directory
  herald version                     version, commit and Go version

Client commands take --server and credentials from flags or HERALD_SERVER,
HERALD_APP_KEY, HERALD_MASTER_SECRET and HERALD_ADMIN_TOKEN.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		// -h or --help: the usage was asked for and printed.
	case errors.Is(err, errUsage):
		os.Exit(2) // the usage is printed
	default:
		msg := err.Error()
		if !strings.HasPrefix(msg, "herald") {
			msg = "herald: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(2)
	}
}

// errUsage is run's answer when it printed the usage for a call that
// was wrong (no command).
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "app":
		return appCmd(ctx, rest, stdout, stderr)
	case "send":
		return send(ctx, rest, stdout, stderr)
	case "recall":
		return recall(ctx, rest, stdout, stderr)
	case "device":
		return deviceCmd(ctx, rest, stdout, stderr)
	case "report":
		return report(ctx, rest, stdout, stderr)
	case "listen":
		return listen(ctx, rest, stdout, stderr)
	case "bench":
		return benchCmd(ctx, rest, stdout, stderr)
	case "backup":
		return backupCmd(ctx, rest, stdout, stderr)
	case "restore":
		return restoreCmd(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q (herald help lists them)", cmd)
	}
}
