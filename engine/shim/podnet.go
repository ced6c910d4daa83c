package shim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// podTap is the tap a pod's VM gets in the pod's network namespace.
const podTap = "vmctl0tap"

// podNetwork is a pod's network as CNI left it in the pod's namespace,
// handed to the VM: its NIC (a tap beside CNI's interface, every frame
// redirected between the two by tc, as Kata and tc-redirect-tap do), and
// the interface and routes the agent gives the guest, CNI's own: the guest
// takes the pod's address and MAC, so the network it is on sees nothing
// change.
type podNetwork struct {
	nic    sandbox.NIC
	iface  agent.Interface
	routes []agent.Route
}

// wirePodNetwork sets the tap and the redirects up in the network
// namespace at nsPath and reads what the guest needs.
func wirePodNetwork(nsPath string) (_ *podNetwork, err error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("%w: the pod's network namespace %s: %v", errdefs.ErrInvalidArgument, nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("the pod's network namespace: %w", err)
	}
	defer h.Close()

	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var cni netlink.Link
	var addrs []netlink.Addr
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 || l.Attrs().Name == podTap {
			continue
		}
		a, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		if len(a) > 0 {
			if cni != nil {
				return nil, fmt.Errorf("%w: the pod's network namespace has more than one interface with an address (%s, %s): one NIC per pod's VM", errdefs.ErrNotImplemented, cni.Attrs().Name, l.Attrs().Name)
			}
			cni, addrs = l, a
		}
	}
	if cni == nil {
		return nil, fmt.Errorf("%w: the pod's network namespace %s has no interface with an address: did CNI run?", errdefs.ErrFailedPrecondition, nsPath)
	}
	pn := &podNetwork{
		nic:   sandbox.NIC{Tap: podTap, MAC: cni.Attrs().HardwareAddr, MTU: cni.Attrs().MTU},
		iface: agent.Interface{MAC: cni.Attrs().HardwareAddr, Name: contract.InterfaceName(0), MTU: cni.Attrs().MTU},
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		pn.iface.Addresses = append(pn.iface.Addresses, netip.PrefixFrom(ip.Unmap(), ones))
	}
	routes, err := h.RouteList(cni, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Gw == nil {
			continue // the subnets of the addresses: the guest has them too
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			continue
		}
		route := agent.Route{Gateway: gw.Unmap(), Device: pn.iface.Name}
		if r.Dst != nil {
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				ones, _ := r.Dst.Mask.Size()
				if ones > 0 {
					route.Destination = netip.PrefixFrom(p.Unmap(), ones)
				}
			}
		}
		pn.routes = append(pn.routes, route)
	}

	// The tap is made in the namespace itself: taps are made through
	// /dev/net/tun by the calling thread.
	if err := inNetNS(ns, func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = podTap
		attrs.MTU = cni.Attrs().MTU
		tap := &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
		return netlink.LinkAdd(tap)
	}); err != nil {
		return nil, fmt.Errorf("create the pod's tap: %w", err)
	}
	defer func() {
		if err != nil {
			if l, lerr := h.LinkByName(podTap); lerr == nil {
				h.LinkDel(l)
			}
		}
	}()
	tap, err := h.LinkByName(podTap)
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(tap); err != nil {
		return nil, err
	}
	if err := redirect(h, cni, tap); err != nil {
		return nil, fmt.Errorf("redirect %s to the tap: %w", cni.Attrs().Name, err)
	}
	if err := redirect(h, tap, cni); err != nil {
		return nil, fmt.Errorf("redirect the tap to %s: %w", cni.Attrs().Name, err)
	}
	return pn, nil
}

// redirect sends every frame arriving on from out of to.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
	}}
	if err := h.QdiscAdd(ingress); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return h.FilterAdd(&netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	})
}

// unwirePodNetwork removes the tap (its redirects go with it; CNI's
// interface's ingress qdisc is removed too). A namespace already gone
// has nothing to remove.
func unwirePodNetwork(nsPath string) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return
	}
	defer h.Close()
	if l, err := h.LinkByName(podTap); err == nil {
		h.LinkDel(l)
	}
	links, _ := h.LinkList()
	for _, l := range links {
		h.QdiscDel(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
		}})
	}
}

// inNetNS runs fn on a thread in the network namespace ns.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the thread ends with the goroutine
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		// Else the thread stays locked and ends with the goroutine.
	}()
	return <-errc
}
