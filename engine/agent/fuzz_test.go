package agent

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/engine/agent/agenttest"
)

// answerFrame is a ttrpc frame answering stream with m, or with the
// status code if it is not OK.
func answerFrame(stream uint32, m proto.Message, code codes.Code) []byte {
	payload, _ := proto.Marshal(m)
	resp := &ttrpc.Response{Payload: payload}
	if code != codes.OK {
		resp = &ttrpc.Response{Status: status.New(code, "no\nsuch\x1b[2Jthing").Proto()}
	}
	b, _ := proto.Marshal(resp)
	return append(frameHeader(uint32(len(b)), stream, frameResponse), b...)
}

func frameHeader(length, stream uint32, typ byte) []byte {
	h := make([]byte, frameHeaderLen)
	binary.BigEndian.PutUint32(h[:4], length)
	binary.BigEndian.PutUint32(h[4:8], stream)
	h[frameTypeOffset] = typ
	return h
}

// FuzzAgentReplies feeds arbitrary bytes to the client as the guest's side
// of the channel, in answer to the first request of a call (data[0] picks
// it among hostileCalls), then ends the stream: the call returns, with an
// error or with what the API allows, and the client does not panic.
func FuzzAgentReplies(f *testing.F) {
	f.Add([]byte{0}) // nothing at all
	for i, m := range []proto.Message{
		&agentapi.HealthResponse{AgentVersion: "v\n1"},
		&agentapi.Empty{},
		&agentapi.WaitProcessResponse{ExitStatus: 300},
		&agentapi.WriteStdinResponse{Len: 6},
		&agentapi.ReadOutputResponse{Data: make([]byte, 100), Offset: 100},
		&agentapi.ReadOutputResponse{Data: []byte("xy"), Offset: 0},
		&agentapi.ExportChangesResponse{ExportId: "0123456789abcdef", Size: 1 << 40},
		&agentapi.PathStat{Name: "a/b", Size: -1},
		&agentapi.ArchivePathResponse{ExportId: "0123456789abcdef", Size: 10, Stat: &agentapi.PathStat{Name: "f"}},
		&agentapi.ListProcessesResponse{TimeUnixNano: 5, Processes: []*agentapi.ProcessInfo{
			{Pid: 1, State: "S", Comm: "sh\n", Args: []string{"a\x1b"}, StartTimeUnixNano: 9}, {Pid: 1, State: "Q"}}},
		&agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: map[string]uint64{"Anon": 1}},
			Networks: []*agentapi.NetworkStats{{Name: "eth0"}, {Name: "eth0"}}, OnlineCpus: 1 << 20},
	} {
		for c := range hostileCalls {
			f.Add(append([]byte{byte(c)}, answerFrame(1, m, codes.OK)...))
		}
		f.Add(append([]byte{byte(i)}, answerFrame(1, m, codes.NotFound)...))
	}
	f.Add(append([]byte{7}, frameHeader(1<<31, 1, frameResponse)...))
	f.Add(append([]byte{7}, frameHeader(0, 1, frameRequest)...))
	f.Add(append([]byte{7}, append(frameHeader(0, 2, frameResponse), frameHeader(0, 1, frameResponse)...)...))
	f.Add(append([]byte{7}, append(frameHeader(0, 1, frameResponse), frameHeader(0, 1, frameResponse)...)...))
	f.Add(append([]byte{11}, append(frameHeader(3, 1, frameResponse), 0x0a, 0x01, 0xff)...))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		hc := hostileCalls[int(data[0])%len(hostileCalls)]
		reply := data[1:]
		host, guest, err := agenttest.SocketPair()
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(host, time.Second)
		defer c.Close()
		// The guest reads the first request, answers with the reply, and
		// ends its side of the stream; it reads on until the host closes.
		go func() {
			defer guest.Close()
			var h [frameHeaderLen]byte
			if _, err := io.ReadFull(guest, h[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, guest, int64(binary.BigEndian.Uint32(h[:4]))); err != nil {
				return
			}
			guest.Write(reply)
			guest.(interface{ CloseWrite() error }).CloseWrite()
			io.Copy(io.Discard, guest)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan struct{})
		var violation string
		go func() {
			defer close(done)
			violation, _ = hc.call(ctx, c)
		}()
		select {
		case <-done:
		case <-time.After(hangSlack + 10*time.Second):
			t.Fatalf("%s did not return after the guest hung up", hc.name)
		}
		if violation != "" {
			t.Errorf("%s gave the caller %s", hc.name, violation)
		}
	})
}
