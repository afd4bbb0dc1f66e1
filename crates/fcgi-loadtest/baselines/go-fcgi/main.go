// Baseline for comparisons: Go's net/http/fcgi serving GET /hello -> "Hello, World!"
// (text/plain) on a TCP address from argv. Standard library only.
//
// Usage: GOMAXPROCS=1 taskset -c 0 ./go-fcgi 127.0.0.1:9001
package main

import (
	"log"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
)

func hello(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/hello" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("Hello, World!"))
}

func main() {
	addr := "127.0.0.1:9001"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("go-fcgi listening on %s", ln.Addr())
	log.Fatal(fcgi.Serve(ln, http.HandlerFunc(hello)))
}
