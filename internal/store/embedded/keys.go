package embedded

import (
	"encoding/binary"
	"time"
)

// The key space. Every key starts with one byte naming its table. A string
// component is written length-first (uvarint), so that no value of one
// component can run into the next, except a key's last string component,
// which is written raw so that keys sort by it (DevicesByAlias returns ID
// order). Numbers are big-endian so that byte order is numeric order.
//
//	'v'                                  format version
//	'S'                                  highest Seq assigned (8 bytes)
//	'w'                                  sweep cursor: expiry index key up to which expired messages were cleaned
//	'a' appKey                           app record
//	'A' appName                          app key
//	'd' deviceID                         device record
//	'D' lp(app) deviceID                 platform     every device of an app (EachDevice, CountDevices; empty in stores written before listing.go)
//	'l' lp(app) lp(alias) deviceID       -            alias index
//	'm' seq                              message record
//	'c' seq                              counters: targeted, delivered, replaced (uvarints)
//	't' seq                              explicit targets: lp(deviceID)...
//	'n' lp(app) msgID                    seq
//	'p' lp(app) idempotencyKey           seq
//	'i' lp(deviceID) seq                 -            inbox entry
//	'k' lp(deviceID) collapseID          seq          the device's inbox entry with that collapse ID
//	'f' lp(app) seq                      -            live fan-out messages of an app
//	'K' lp(app) collapseID               seq          the app's fan-out message with that collapse ID
//	'r' seq deviceID                     -            fan-out acknowledgement
//	'x' expiresAt seq                    -            expiry index
//	'q' sendAt seq                       schedule     scheduled message not yet fired (schedule.go)
//	'j' seq deviceID                     relay job    a message due to a device's vendor channel (relay.go)
//	'J' due seq deviceID                 relay job    the same jobs in due order
//	'o' seq lp(channel) lp(result) reason  count      relay outcomes of a message
//	'T' lp(app) lp(kind) address         deviceID     the device holding a vendor address
//	'C' lp(app) kind                     sealed       an app's channel settings
//	'I'                                  -            the 'T' index was built for the devices already stored
//	'G' lp(app) lp(tag) deviceID         -            the app's devices with a tag (ListDevices, listing.go)
//	'N' lp(app) seq                      -            the app's messages in Seq order (ListMessages, listing.go)
//	'L'                                  -            'G', 'N' and the 'D' values were built for what was already stored
//
// Acknowledgements are keyed by message first: Pending asks "has d acked
// seq" (a point lookup either way), while purging a message must drop all
// of its acks at once, which this order makes one range deletion.
const (
	tVersion  = 'v'
	tSeq      = 'S'
	tSweep    = 'w'
	tApp      = 'a'
	tAppName  = 'A'
	tDevice   = 'd'
	tAppDev   = 'D'
	tAlias    = 'l'
	tMsg      = 'm'
	tCounters = 'c'
	tTargets  = 't'
	tMsgID    = 'n'
	tIdem     = 'p'
	tInbox    = 'i'
	tCollapse = 'k'
	tFanout   = 'f'
	tFanColl  = 'K'
	tAck      = 'r'
	tExpiry   = 'x'
	tSched    = 'q'
	tJob      = 'j'
	tJobDue   = 'J'
	tOutcome  = 'o'
	tAddress  = 'T'
	tChanConf = 'C'
	tAddrDone = 'I'
	tTagDev   = 'G'
	tAppMsg   = 'N'
	tListDone = 'L'
)

// formatVersion is written at creation; Open refuses a store it does not know.
const formatVersion = 1

func key(table byte) []byte { return []byte{table} }

// lp appends s length-first.
func lp(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func u64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func kApp(appKey string) []byte   { return append(key(tApp), appKey...) }
func kAppName(name string) []byte { return append(key(tAppName), name...) }
func kDevice(id string) []byte    { return append(key(tDevice), id...) }
func kAppDevs(app string) []byte  { return lp(key(tAppDev), app) }
func kAppDev(app, id string) []byte {
	return append(kAppDevs(app), id...)
}
func kAliasPrefix(app, alias string) []byte { return lp(lp(key(tAlias), app), alias) }
func kAlias(app, alias, id string) []byte   { return append(kAliasPrefix(app, alias), id...) }
func kMsg(seq uint64) []byte                { return u64(key(tMsg), seq) }
func kCounters(seq uint64) []byte           { return u64(key(tCounters), seq) }
func kTargets(seq uint64) []byte            { return u64(key(tTargets), seq) }
func kMsgID(app, id string) []byte          { return append(lp(key(tMsgID), app), id...) }
func kIdem(app, k string) []byte            { return append(lp(key(tIdem), app), k...) }
func kInboxPrefix(dev string) []byte        { return lp(key(tInbox), dev) }
func kInbox(dev string, seq uint64) []byte  { return u64(kInboxPrefix(dev), seq) }
func kCollapsePrefix(dev string) []byte     { return lp(key(tCollapse), dev) }
func kCollapse(dev, cid string) []byte      { return append(kCollapsePrefix(dev), cid...) }
func kFanoutPrefix(app string) []byte       { return lp(key(tFanout), app) }
func kFanout(app string, seq uint64) []byte { return u64(kFanoutPrefix(app), seq) }
func kFanColl(app, cid string) []byte       { return append(lp(key(tFanColl), app), cid...) }
func kAckPrefix(seq uint64) []byte          { return u64(key(tAck), seq) }
func kAck(seq uint64, dev string) []byte    { return append(kAckPrefix(seq), dev...) }
func kExpiry(at time.Time, seq uint64) []byte {
	return u64(u64(key(tExpiry), timeOrder(at)), seq)
}
func kSched(at time.Time, seq uint64) []byte {
	return u64(u64(key(tSched), timeOrder(at)), seq)
}

func kJobPrefix(seq uint64) []byte       { return u64(key(tJob), seq) }
func kJob(seq uint64, dev string) []byte { return append(kJobPrefix(seq), dev...) }
func kOutcomePrefix(seq uint64) []byte   { return u64(key(tOutcome), seq) }
func kChanConf(app, kind string) []byte  { return append(lp(key(tChanConf), app), kind...) }
func kAddress(app, kind, addr string) []byte {
	return append(lp(lp(key(tAddress), app), kind), addr...)
}
func kJobDue(due time.Time, seq uint64, dev string) []byte {
	return append(u64(u64(key(tJobDue), timeOrder(due)), seq), dev...)
}
func kOutcome(seq uint64, channel, result, reason string) []byte {
	return append(lp(lp(kOutcomePrefix(seq), channel), result), reason...)
}

// timeOrder maps t to a uint64 whose order is t's order, times before 1970
// included (flipping the sign bit turns two's complement into offset binary).
func timeOrder(t time.Time) uint64 { return uint64(t.UnixNano()) ^ 1<<63 }

// seqSuffix reads the Seq that ends key k.
func seqSuffix(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

// prefixEnd returns the smallest key greater than every key with prefix p,
// the exclusive upper bound of a prefix scan.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
