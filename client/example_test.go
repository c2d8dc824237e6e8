package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/heraldpush/herald/client"
)

// A device of a cluster: it registers with any node that answers, and
// receives from any, moving on when one dies.
func ExampleRegisterAny() {
	ctx := context.Background()
	nodes := []string{"https://a.herald.example", "https://b.herald.example"}
	reg, err := client.RegisterAny(ctx, nil, nodes, client.RegisterRequest{AppKey: "ak_...", Platform: "android"})
	if err != nil {
		log.Fatal(err)
	}
	// Keep reg: it holds the device secret. Its Servers may change later
	// (a node added or retired) without registering again.
	dev := client.NewDevice(*reg, nil)
	mqtt := []string{"mqtts://a.herald.example:8883", "mqtts://b.herald.example:8883"}
	err = dev.ListenMQTTAny(ctx, mqtt, func(m client.Message) error {
		fmt.Println(m.ID, m.Notification.Title)
		return nil // acknowledged once this returns
	})
	log.Fatal(err)
}
