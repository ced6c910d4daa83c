package contract

// Bounds of what the agent reports about a running container
// (ListProcesses, Stats). The agent never sends more; the host refuses an
// answer with more, as it refuses anything no agent keeping to the API
// would send. They keep the largest answer well under ttrpc's 4 MiB
// message.
const (
	// MaxListedProcesses is how many processes ListProcesses lists at
	// most: those with the lowest pids.
	MaxListedProcesses = 2048
	// MaxProcessArgs and MaxProcessArgsBytes bound one process's argv: at
	// most that many arguments, of that many bytes together (the last one
	// cut short).
	MaxProcessArgs      = 64
	MaxProcessArgsBytes = 1024
	// MaxProcessNameLen bounds a process's command name, user name and
	// terminal name, in bytes.
	MaxProcessNameLen = 64
	// MaxMemoryStatKeys bounds the keys of memory.stat and memory.events
	// (a 6.1 kernel has about 50 in memory.stat), MaxStatKeyLen the
	// length of each.
	MaxMemoryStatKeys = 128
	MaxStatKeyLen     = 64
	// MaxIODevices bounds the block devices of Stats' io.
	MaxIODevices = 64
	// MaxNetworkInterfaces bounds the interfaces of Stats' networks.
	MaxNetworkInterfaces = 64
)
