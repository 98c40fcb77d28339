// gateway-uds: Go's net/http, stdlib only, through the tessera gateway's Unix socket.
//
//	gateway-uds -socket /run/tessera/gateway.sock -url http://api.openai.test/v1/models [-key tessera-placeholder] [-tag go-uds]
//
// The request goes in origin form with the URL's host as Host, over a Transport whose
// DialContext ignores the address and dials the socket. It carries the placeholder key as
// Authorization (which the gateway must drop) and X-Interop-Call: TAG. Prints the status line and
// the body; exits 1 on a transport error or a non-2xx status.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	socket := flag.String("socket", "", "the gateway's Unix socket")
	url := flag.String("url", "http://api.openai.test/v1/models", "the URL to GET (its host is sent as Host)")
	key := flag.String("key", "tessera-placeholder", "the API key the agent sends")
	tag := flag.String("tag", "go-uds", "X-Interop-Call header value")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "-socket is required")
		os.Exit(2)
	}
	var d net.Dialer
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", *socket)
			},
		},
	}
	req, err := http.NewRequest(http.MethodGet, *url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	req.Header.Set("Authorization", "Bearer "+*key)
	req.Header.Set("X-Interop-Call", *tag)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println("error reading the body:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", resp.Status, body)
	if resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}
