// Command testbox is the local cluster's tiny test image: one static binary
// (standard library only) that the real-node tests run as a container.
//
//	testbox serve ADDR        HTTP: "/" answers "ok <hostname>", "/healthz" 200
//	testbox get URL           print the body of a GET, exit 1 on any failure
//	testbox hog MIB           allocate and touch MIB MiB, then wait (an OOM test)
//	testbox inspect           write uid, rootfs writability, CapEff, Seccomp,
//	                          NoNewPrivs to the termination log and stdout
//	testbox write PATH TEXT   write TEXT to PATH
//	testbox cat PATH          print PATH
//	testbox sleep             wait for SIGTERM/SIGINT
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "testbox: "+format+"\n", a...)
	os.Exit(1)
}

func waitForSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "ok %s\n", host) })
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			die("serve: %v", err)
		}
	}()
	waitForSignal()
}

func get(url string) {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		die("get: %v", err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	fmt.Print(string(body))
	if r.StatusCode != 200 {
		die("get: status %d", r.StatusCode)
	}
}

func hog(mib int) {
	var chunks [][]byte
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		chunks = append(chunks, b)
	}
	fmt.Printf("holding %d MiB\n", len(chunks))
	waitForSignal()
}

func procStatus() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func inspect() {
	rootfs := "writable"
	if err := os.WriteFile("/testbox-probe", []byte("x"), 0o644); err != nil {
		if pe, ok := err.(*os.PathError); ok && pe.Err == syscall.EROFS {
			rootfs = "EROFS"
		} else {
			rootfs = "error"
		}
	}
	st := procStatus()
	msg := fmt.Sprintf("uid=%d rootfs=%s capeff=%s seccomp=%s nnp=%s",
		os.Getuid(), rootfs, st["CapEff"], st["Seccomp"], st["NoNewPrivs"])
	fmt.Println(msg)
	if err := os.WriteFile("/dev/termination-log", []byte(msg), 0o644); err != nil {
		die("termination log: %v", err)
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: testbox serve|get|hog|inspect|write|cat|sleep ...")
	}
	arg := func(i int) string {
		if len(os.Args) <= i {
			die("%s: missing argument %d", os.Args[1], i-1)
		}
		return os.Args[i]
	}
	switch os.Args[1] {
	case "serve":
		serve(arg(2))
	case "get":
		get(arg(2))
	case "hog":
		n, err := strconv.Atoi(arg(2))
		if err != nil {
			die("hog: %v", err)
		}
		hog(n)
	case "inspect":
		inspect()
	case "write":
		if err := os.WriteFile(arg(2), []byte(arg(3)), 0o644); err != nil {
			die("write: %v", err)
		}
	case "cat":
		b, err := os.ReadFile(arg(2))
		if err != nil {
			die("cat: %v", err)
		}
		os.Stdout.Write(b)
	case "sleep":
		waitForSignal()
	default:
		die("unknown command %q", os.Args[1])
	}
}
