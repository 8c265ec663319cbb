package channels

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrPrivateDestination: a destination a tenant chose resolves to an address inside
// the operator's network (loopback, private, link-local, carrier-grade NAT, unspecified
// or multicast). Sending there would let a tenant reach the control plane's own
// neighbours (a cloud metadata endpoint, an admin port) and read their answers in a
// test send.
var ErrPrivateDestination = errors.New("the destination is not a public address")

// PublicOnlyDialer is a dialer that refuses to connect to anything but public
// unicast addresses. The check runs on the address actually dialled, after DNS
// resolution, so a name that resolves (or re-resolves) to a private address is
// refused too.
func PublicOnlyDialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("%w: %q is not an IP address", ErrPrivateDestination, host)
			}
			if !IsPublic(ip) {
				return fmt.Errorf("%w: %s", ErrPrivateDestination, ip)
			}
			return nil
		}}
}

// PublicOnlyClient is an HTTP client whose connections go to public addresses only,
// directly (no proxy from the environment: a proxy inside the network would be a way
// around the check).
func PublicOnlyClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = PublicOnlyDialer(10 * time.Second).DialContext
	return &http.Client{Transport: tr, Timeout: timeout}
}

var carrierNAT = netip.MustParsePrefix("100.64.0.0/10")

// IsPublic reports whether ip is a global unicast address outside the private,
// carrier-grade NAT and unique-local ranges.
func IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !carrierNAT.Contains(ip)
}

// refusedDestination turns a dial refused by the guard into a permanent failure: no
// retry reaches a private address.
func refusedDestination(channel string, err error) error {
	if errors.Is(err, ErrPrivateDestination) {
		return &DeliveryError{Channel: channel, Err: ErrPrivateDestination}
	}
	return nil
}
