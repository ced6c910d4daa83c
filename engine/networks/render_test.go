package networks

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// render writes a rule's expressions in an nft-like notation, from what
// the kernel gives back, so that tests compare rules as text. It knows the
// expressions the table uses; anything else shows as its Go type, which no
// expected rule contains.
func render(es []expr.Any) string {
	var out []string
	var subject, kind string // what register 1 holds, and how to show values compared to it
	var masked []byte
	imm := map[uint32][]byte{}
	for _, e := range es {
		switch e := e.(type) {
		case *expr.Meta:
			kind = "num"
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				subject, kind = "iifname", "name"
			case expr.MetaKeyOIFNAME:
				subject, kind = "oifname", "name"
			case expr.MetaKeyNFPROTO:
				subject, kind = "nfproto", "nfproto"
			case expr.MetaKeyL4PROTO:
				subject, kind = "l4proto", "l4proto"
			default:
				subject = fmt.Sprintf("meta(%d)", e.Key)
			}
			masked = nil
		case *expr.Payload:
			masked = nil
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == 12 && e.Len == 4:
				subject, kind = "ip saddr", "ip"
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == 16 && e.Len == 4:
				subject, kind = "ip daddr", "ip"
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				subject, kind = "th dport", "port"
			default:
				subject, kind = fmt.Sprintf("payload(%d,%d,%d)", e.Base, e.Offset, e.Len), "hex"
			}
		case *expr.Ct:
			subject, kind, masked = "ct state", "ctstate", nil
			if e.Key == expr.CtKeySTATUS {
				subject, kind = "ct status", "ctstatus"
			}
		case *expr.Fib:
			subject, kind, masked = "fib daddr type", "fib", nil
		case *expr.Bitwise:
			masked = e.Mask
		case *expr.Cmp:
			op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= "}[e.Op]
			if kind == "ctstate" && e.Op == expr.CmpOpNeq && binary.NativeEndian.Uint32(e.Data) == 0 {
				// (state & bits) != 0: any of the bits.
				out = append(out, "ct state "+ctStates(binary.NativeEndian.Uint32(masked)))
				continue
			}
			if kind == "ctstatus" && e.Op == expr.CmpOpNeq && binary.NativeEndian.Uint32(e.Data) == 0 {
				status := fmt.Sprintf("%#x", binary.NativeEndian.Uint32(masked))
				if binary.NativeEndian.Uint32(masked) == ipsDstNAT {
					status = "dnat"
				}
				out = append(out, "ct status "+status)
				continue
			}
			v := value(kind, e.Data)
			if masked != nil && kind == "ip" {
				ones := 0
				for _, b := range masked {
					for i := 7; i >= 0; i-- {
						if b&(1<<i) != 0 {
							ones++
						}
					}
				}
				v = fmt.Sprintf("%s/%d", v, ones)
			}
			out = append(out, fmt.Sprintf("%s %s%s", subject, op, v))
		case *expr.Immediate:
			imm[e.Register] = e.Data
		case *expr.NAT:
			if e.Type == expr.NATTypeDestNAT {
				out = append(out, fmt.Sprintf("dnat to %s:%d", value("ip", imm[e.RegAddrMin]), binary.BigEndian.Uint16(imm[e.RegProtoMin])))
			} else {
				out = append(out, "snat")
			}
		case *expr.Masq:
			out = append(out, "masquerade")
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				out = append(out, "accept")
			case expr.VerdictDrop:
				out = append(out, "drop")
			case expr.VerdictReturn:
				out = append(out, "return")
			case expr.VerdictJump:
				out = append(out, "jump "+e.Chain)
			default:
				out = append(out, fmt.Sprintf("verdict(%d)", e.Kind))
			}
		default:
			out = append(out, fmt.Sprintf("%T", e))
		}
	}
	return strings.Join(out, " ")
}

func value(kind string, b []byte) string {
	switch kind {
	case "name":
		return `"` + strings.TrimRight(string(b), "\x00") + `"`
	case "ip":
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case "port":
		if len(b) == 2 {
			return fmt.Sprint(binary.BigEndian.Uint16(b))
		}
	case "fib":
		if len(b) == 4 && binary.NativeEndian.Uint32(b) == unix.RTN_LOCAL {
			return "local"
		}
	case "nfproto":
		if len(b) == 1 && b[0] == unix.NFPROTO_IPV4 {
			return "ipv4"
		}
	case "l4proto":
		if len(b) == 1 && b[0] == unix.IPPROTO_TCP {
			return "tcp"
		}
		if len(b) == 1 && b[0] == unix.IPPROTO_UDP {
			return "udp"
		}
	}
	return fmt.Sprintf("0x%x", b)
}

func ctStates(bits uint32) string {
	var s []string
	for _, st := range []struct {
		bit  uint32
		name string
	}{{expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitINVALID, "invalid"}} {
		if bits&st.bit != 0 {
			s = append(s, st.name)
		}
	}
	return strings.Join(s, ",")
}
