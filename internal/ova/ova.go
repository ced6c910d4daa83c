// Package ova writes and checks the appliance's OVA: an OVF 1.0 descriptor,
// its manifest and a streamOptimized VMDK in one tar, the form VirtualBox
// ("Import Appliance") and VMware Workstation ("Open") take.
//
// The descriptor describes a BIOS machine that both import without
// questions: CPUs and memory, the disk on an IDE controller (PIIX4, which
// both emulate and every Linux kernel drives), an E1000 NIC on the NAT
// network, Debian 64-bit as the guest OS. VMware's importer is told to
// offer nested virtualization (vhv.enable); VirtualBox has no such
// descriptor setting, the README gives its one command.
package ova

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/vmctl/vmctl/internal/filedigest"
)

// Machine is what the descriptor says about the virtual machine.
type Machine struct {
	Name        string // the VM's name on import, and the OVA's base name inside
	Description string // the annotation the importers show
	Version     string // the product version (vmctl's)
	CPUs        int
	MemoryMiB   int
	Disk        string // path of a streamOptimized VMDK
}

// StreamOptimizedFormat is the disk format URI VMware and VirtualBox expect
// for a compressed, streamable VMDK.
const StreamOptimizedFormat = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

// Write writes m's OVA to path (atomically: a temporary file renamed). The
// tar holds, in this order as OVF requires, NAME.ovf, NAME.mf (SHA-256 of
// the other two) and the disk under its own base name.
func Write(path string, m Machine) error {
	if m.Name == "" || strings.ContainsAny(m.Name, "/\\ ") {
		return fmt.Errorf("ova: bad machine name %q", m.Name)
	}
	if m.CPUs < 1 || m.MemoryMiB < 64 {
		return fmt.Errorf("ova: %d CPUs and %d MiB is no machine", m.CPUs, m.MemoryMiB)
	}
	hdr, err := ReadVMDKHeader(m.Disk)
	if err != nil {
		return err
	}
	if !hdr.StreamOptimized() {
		return fmt.Errorf("ova: %s is not a streamOptimized VMDK", m.Disk)
	}
	st, err := os.Stat(m.Disk)
	if err != nil {
		return err
	}
	diskName := filepath.Base(m.Disk)
	ovf, err := Descriptor(m, diskName, st.Size(), hdr.CapacityBytes())
	if err != nil {
		return err
	}
	diskSum, err := filedigest.SHA256(m.Disk)
	if err != nil {
		return err
	}
	ovfName, mfName := m.Name+".ovf", m.Name+".mf"
	mf := fmt.Sprintf("SHA256(%s)= %x\nSHA256(%s)= %s\n", ovfName, sha256.Sum256(ovf), diskName, diskSum)

	tmp, err := os.CreateTemp(filepath.Dir(path), ".ova-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	mtime := st.ModTime().Truncate(1e9)
	tw := tar.NewWriter(tmp)
	add := func(name string, size int64, body io.Reader) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: mtime,
			Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("ova: %s: %w", name, err)
		}
		_, err := io.Copy(tw, body)
		return err
	}
	if err := add(ovfName, int64(len(ovf)), bytes.NewReader(ovf)); err != nil {
		return err
	}
	if err := add(mfName, int64(len(mf)), strings.NewReader(mf)); err != nil {
		return err
	}
	disk, err := os.Open(m.Disk)
	if err != nil {
		return err
	}
	defer disk.Close()
	if err := add(diskName, st.Size(), disk); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Descriptor renders the OVF 1.0 descriptor of m with one disk file
// (diskName, diskSize bytes in the package, capacity bytes as the guest
// sees it). Elements of the CIM classes come in their schema's order, which
// VMware's importer enforces.
func Descriptor(m Machine, diskName string, diskSize int64, capacity uint64) ([]byte, error) {
	var b bytes.Buffer
	err := descriptorTemplate.Execute(&b, struct {
		Machine
		DiskName string
		DiskSize int64
		Capacity uint64
		Format   string
	}{m, diskName, diskSize, capacity, StreamOptimizedFormat})
	if err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// The guest OS is CIM's "Debian 64-Bit" (96); VMware reads its own osType.
// ResourceTypes: 3 processor, 4 memory, 5 IDE controller, 17 disk drive,
// 10 Ethernet adapter.
var descriptorTemplate = template.Must(template.New("ovf").Funcs(template.FuncMap{
	"x": func(s string) (string, error) {
		var b bytes.Buffer
		if err := xmlEscape(&b, s); err != nil {
			return "", err
		}
		return b.String(), nil
	},
}).Parse(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    ovf:version="1.0">
  <References>
    <File ovf:id="file1" ovf:href="{{x .DiskName}}" ovf:size="{{.DiskSize}}"/>
  </References>
  <DiskSection>
    <Info>The appliance's disk</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{{.Capacity}}" ovf:format="{{.Format}}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The network the appliance takes its address from (DHCP)</Info>
    <Network ovf:name="NAT">
      <Description>NAT to the host's network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{{x .Name}}">
    <Info>{{x .Description}}</Info>
    <Name>{{x .Name}}</Name>
    <AnnotationSection>
      <Info>What the appliance is</Info>
      <Annotation>{{x .Description}}</Annotation>
    </AnnotationSection>
    <ProductSection>
      <Info>The product in the appliance</Info>
      <Product>vmctl</Product>
      <Version>{{x .Version}}</Version>
    </ProductSection>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest">
      <Info>The guest operating system</Info>
      <Description>Debian GNU/Linux 12 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>{{.CPUs}} CPUs, {{.MemoryMiB}} MiB, one disk, one NIC</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{{x .Name}}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-10 virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{{.CPUs}} virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.CPUs}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{{.MemoryMiB}} MiB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.MemoryMiB}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>IDE controller</rasd:Description>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:ExtraConfig ovf:required="false" vmw:key="vhv.enable" vmw:value="TRUE"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`))

func xmlEscape(w io.Writer, s string) error { return xml.EscapeText(w, []byte(s)) }

// VMDKHeader is the part of a sparse VMDK's header (VMware's "Virtual Disk
// Format 5.0", SparseExtentHeader) that says what kind of disk it is.
type VMDKHeader struct {
	Version           uint32
	Flags             uint32
	CapacitySectors   uint64
	CompressAlgorithm uint16
	CreateType        string // from the embedded descriptor
}

// Flags of the sparse header.
const (
	vmdkFlagCompressed = 1 << 16 // grains are compressed
	vmdkFlagMarkers    = 1 << 17 // the stream has markers
)

// StreamOptimized says whether the header is a streamOptimized disk's:
// compressed grains with markers, deflate, and the descriptor's createType.
func (h VMDKHeader) StreamOptimized() bool {
	return h.Flags&vmdkFlagCompressed != 0 && h.Flags&vmdkFlagMarkers != 0 &&
		h.CompressAlgorithm == 1 && h.CreateType == "streamOptimized"
}

// CapacityBytes is the disk's size as the guest sees it.
func (h VMDKHeader) CapacityBytes() uint64 { return h.CapacitySectors * 512 }

// ReadVMDKHeader reads the sparse header and the createType of the embedded
// descriptor of a VMDK.
func ReadVMDKHeader(path string) (VMDKHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return VMDKHeader{}, err
	}
	defer f.Close()
	return readVMDKHeader(f)
}

func readVMDKHeader(r io.ReaderAt) (VMDKHeader, error) {
	var raw [512]byte
	if _, err := r.ReadAt(raw[:], 0); err != nil {
		return VMDKHeader{}, fmt.Errorf("ova: vmdk header: %w", err)
	}
	if string(raw[0:4]) != "KDMV" {
		return VMDKHeader{}, errors.New("ova: not a sparse VMDK (no KDMV magic)")
	}
	le := binary.LittleEndian
	h := VMDKHeader{
		Version:           le.Uint32(raw[4:]),
		Flags:             le.Uint32(raw[8:]),
		CapacitySectors:   le.Uint64(raw[12:]),
		CompressAlgorithm: le.Uint16(raw[77:]),
	}
	descOffset, descSize := le.Uint64(raw[28:]), le.Uint64(raw[36:])
	if descOffset == 0 || descSize == 0 || descSize > 2048 {
		return h, errors.New("ova: vmdk has no embedded descriptor")
	}
	desc := make([]byte, descSize*512)
	if _, err := r.ReadAt(desc, int64(descOffset)*512); err != nil {
		return h, fmt.Errorf("ova: vmdk descriptor: %w", err)
	}
	for _, line := range strings.Split(string(bytes.TrimRight(desc, "\x00")), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.TrimSpace(k) == "createType" {
			h.CreateType = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return h, nil
}
