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
	"syscall"
)

const usage = `herald: a self-hosted push notification service

Usage:
  herald serve [flags]               run a node (herald serve -h for flags)
  herald app create NAME             create an app; prints its app_key and master_secret
  herald app channel set|show|delete  an app's APNs, FCM and Web Push settings and channel policy
  herald send [audience] [content]   push a message (herald send -h)
  herald report MSG_ID               a message's delivery report
  herald listen [flags]              act as a device: register, receive, print, ack
  herald bench WORKLOAD [flags]      load tests: conns, fanout, relay, cluster (herald bench -h)

Client commands take --server and credentials from flags or HERALD_SERVER,
HERALD_APP_KEY, HERALD_MASTER_SECRET and HERALD_ADMIN_TOKEN.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "herald:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "app":
		return appCmd(ctx, rest, stdout, stderr)
	case "send":
		return send(ctx, rest, stdout, stderr)
	case "report":
		return report(ctx, rest, stdout, stderr)
	case "listen":
		return listen(ctx, rest, stdout, stderr)
	case "bench":
		return benchCmd(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
