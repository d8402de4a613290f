#include "keel/raft/codec.h"

#include <cstring>
#include <type_traits>

namespace keel::raft::codec {
namespace {

constexpr uint16_t message_magic = 0x524B;
constexpr uint16_t heartbeat_magic = 0x4248;
constexpr uint8_t membership_version = 1;

// Kinds are the wire values; never renumber.
enum class kind : uint8_t {
  vote_request = 1,
  vote_response = 2,
  append_request = 3,
  append_response = 4,
  heartbeat_request = 5,
  heartbeat_response = 6,
  reset_request = 7,
  timeout_now = 8,
};

class writer {
 public:
  explicit writer(std::vector<std::byte>& out) : out_(out) {}
  template <class T>
  void put(T v) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U u = static_cast<U>(v);
    for (size_t i = 0; i < sizeof(T); ++i)
      out_.push_back(std::byte((u >> (8 * i)) & 0xff));
  }
  void put_bool(bool b) { put<uint8_t>(b ? 1 : 0); }
  void put_bytes(const shared_bytes& b) {
    put<uint64_t>(b.size());
    out_.insert(out_.end(), b.data(), b.data() + b.size());
  }

 private:
  std::vector<std::byte>& out_;
};

class reader {
 public:
  explicit reader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  bool get(T& v) {
    static_assert(std::is_integral_v<T>);
    if (in_.size() - pos_ < sizeof(T)) return false;
    using U = std::make_unsigned_t<T>;
    U u = 0;
    for (size_t i = 0; i < sizeof(T); ++i)
      u |= U(std::to_integer<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += sizeof(T);
    v = static_cast<T>(u);
    return true;
  }
  bool get_bool(bool& b) {
    uint8_t v = 0;
    if (!get(v) || v > 1) return false;
    b = v == 1;
    return true;
  }
  bool get_bytes(shared_bytes& b, uint64_t limit) {
    uint64_t n = 0;
    if (!get(n) || n > limit || n > in_.size() - pos_) return false;
    b = shared_bytes::copy_of(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

error malformed(const char* what) {
  return make_error(errc::malformed, what);
}

void put_offset(writer& w, offset o) {
  w.put<int64_t>(o.value());
}
void put_term(writer& w, term_id t) {
  w.put<int64_t>(t.value());
}
bool get_offset(reader& r, offset& o) {
  int64_t v = 0;
  if (!r.get(v)) return false;
  o = offset(v);
  return true;
}
bool get_term(reader& r, term_id& t) {
  int64_t v = 0;
  if (!r.get(v)) return false;
  t = term_id(v);
  return true;
}

void put_membership(writer& w, const membership& c) {
  w.put<uint8_t>(membership_version);
  w.put<uint32_t>(static_cast<uint32_t>(c.voters.size()));
  for (node_id n : c.voters)
    w.put<uint64_t>(n.value());
  w.put<uint32_t>(static_cast<uint32_t>(c.learners.size()));
  for (node_id n : c.learners)
    w.put<uint64_t>(n.value());
}

result<membership> get_membership(reader& r) {
  uint8_t v = 0;
  if (!r.get(v)) return malformed("membership: truncated version");
  if (v != membership_version) return make_error(errc::unsupported_version, "membership version");
  membership c;
  for (auto* list : {&c.voters, &c.learners}) {
    uint32_t count = 0;
    if (!r.get(count)) return malformed("membership: truncated count");
    if (count > max_members || uint64_t(count) * 8 > r.remaining())
      return malformed("membership: count out of bounds");
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t id = 0;
      if (!r.get(id)) return malformed("membership: truncated member");
      list->push_back(node_id(id));
    }
  }
  membership check = c;
  if (!check.normalize() || !(check == c)) return malformed("membership: unsorted or invalid");
  return c;
}

kind kind_of(const message_body& body) {
  return std::visit(
      [](const auto& b) -> kind {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, vote_request>) return kind::vote_request;
        if constexpr (std::is_same_v<T, vote_response>) return kind::vote_response;
        if constexpr (std::is_same_v<T, append_request>) return kind::append_request;
        if constexpr (std::is_same_v<T, append_response>) return kind::append_response;
        if constexpr (std::is_same_v<T, heartbeat_request>) return kind::heartbeat_request;
        if constexpr (std::is_same_v<T, heartbeat_response>) return kind::heartbeat_response;
        if constexpr (std::is_same_v<T, reset_request>) return kind::reset_request;
        if constexpr (std::is_same_v<T, timeout_now>) return kind::timeout_now;
      },
      body);
}

void put_body(writer& w, const message_body& body) {
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, vote_request>) {
          w.put_bool(b.pre_vote);
          w.put_bool(b.transfer);
          put_offset(w, b.last_offset);
          put_term(w, b.last_term);
        } else if constexpr (std::is_same_v<T, vote_response>) {
          w.put_bool(b.pre_vote);
          w.put_bool(b.granted);
        } else if constexpr (std::is_same_v<T, append_request>) {
          put_offset(w, b.prev_offset);
          put_term(w, b.prev_term);
          put_offset(w, b.leader_commit);
          w.put<uint32_t>(static_cast<uint32_t>(b.batches.size()));
          for (const batch& e : b.batches) {
            w.put<uint8_t>(static_cast<uint8_t>(e.type));
            put_term(w, e.term);
            put_offset(w, e.base);
            put_offset(w, e.last);
            w.put_bytes(e.payload);
          }
        } else if constexpr (std::is_same_v<T, append_response>) {
          w.put_bool(b.reject);
          put_offset(w, b.match);
          put_offset(w, b.rejected_prev);
          put_offset(w, b.hint_offset);
          put_term(w, b.hint_term);
        } else if constexpr (std::is_same_v<T, heartbeat_request>) {
          put_offset(w, b.commit);
          w.put<uint64_t>(b.read_seq);
        } else if constexpr (std::is_same_v<T, heartbeat_response>) {
          w.put<uint64_t>(b.read_seq);
        } else if constexpr (std::is_same_v<T, reset_request>) {
          put_offset(w, b.start);
          put_term(w, b.start_prev_term);
          put_membership(w, b.config);
          put_offset(w, b.config_offset);
          w.put_bytes(b.snapshot);
        } else if constexpr (std::is_same_v<T, timeout_now>) {
          // no body
        }
      },
      body);
}

result<message_body> get_body(reader& r, kind k) {
  switch (k) {
    case kind::vote_request: {
      vote_request b;
      if (!r.get_bool(b.pre_vote) || !r.get_bool(b.transfer) || !get_offset(r, b.last_offset) ||
          !get_term(r, b.last_term))
        return malformed("vote_request: truncated");
      return message_body(b);
    }
    case kind::vote_response: {
      vote_response b;
      if (!r.get_bool(b.pre_vote) || !r.get_bool(b.granted))
        return malformed("vote_response: truncated");
      return message_body(b);
    }
    case kind::append_request: {
      append_request b;
      uint32_t count = 0;
      if (!get_offset(r, b.prev_offset) || !get_term(r, b.prev_term) ||
          !get_offset(r, b.leader_commit) || !r.get(count))
        return malformed("append_request: truncated header");
      // Each batch takes at least 33 bytes on the wire: bound the count by what is left.
      if (count > max_batches_per_message || uint64_t(count) * 33 > r.remaining())
        return malformed("append_request: batch count out of bounds");
      b.batches.reserve(count);
      for (uint32_t i = 0; i < count; ++i) {
        batch e;
        uint8_t type = 0;
        if (!r.get(type) || !get_term(r, e.term) || !get_offset(r, e.base) ||
            !get_offset(r, e.last) || !r.get_bytes(e.payload, max_payload_bytes))
          return malformed("append_request: truncated batch");
        e.type = static_cast<batch_type>(type);
        b.batches.push_back(std::move(e));
      }
      return message_body(std::move(b));
    }
    case kind::append_response: {
      append_response b;
      if (!r.get_bool(b.reject) || !get_offset(r, b.match) || !get_offset(r, b.rejected_prev) ||
          !get_offset(r, b.hint_offset) || !get_term(r, b.hint_term))
        return malformed("append_response: truncated");
      return message_body(b);
    }
    case kind::heartbeat_request: {
      heartbeat_request b;
      if (!get_offset(r, b.commit) || !r.get(b.read_seq))
        return malformed("heartbeat_request: truncated");
      return message_body(b);
    }
    case kind::heartbeat_response: {
      heartbeat_response b;
      if (!r.get(b.read_seq)) return malformed("heartbeat_response: truncated");
      return message_body(b);
    }
    case kind::reset_request: {
      reset_request b;
      if (!get_offset(r, b.start) || !get_term(r, b.start_prev_term))
        return malformed("reset_request: truncated");
      auto c = get_membership(r);
      if (!c.ok()) return c.err();
      b.config = std::move(*c);
      if (!get_offset(r, b.config_offset) || !r.get_bytes(b.snapshot, max_message_bytes))
        return malformed("reset_request: truncated");
      return message_body(std::move(b));
    }
    case kind::timeout_now:
      return message_body(timeout_now{});
  }
  return malformed("unknown message kind");
}

bool known_kind(uint8_t k) {
  return k >= 1 && k <= 8;
}

}  // namespace

status validate(const message& m) {
  if (m.from.is_none() || m.to.is_none()) return malformed("message: sender or recipient is none");
  if (m.term < term_id(0)) return malformed("message: negative term");
  return std::visit(
      [&](const auto& b) -> status {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, vote_request>) {
          if (b.last_offset < offset::none() || b.last_term < term_id(0) || b.last_term > m.term)
            return malformed("vote_request: bad last offset or term");
        } else if constexpr (std::is_same_v<T, append_request>) {
          if (b.prev_offset < offset::none() || b.prev_term < term_id(0) || b.prev_term > m.term ||
              b.leader_commit < offset::none())
            return malformed("append_request: bad prev or commit");
          offset expect = b.prev_offset.next();
          term_id prev_term = b.prev_term;
          for (const batch& e : b.batches) {
            if (!is_known(e.type)) return malformed("append_request: unknown batch type");
            if (e.base != expect || e.last < e.base) return malformed("append_request: gap");
            if (e.term < prev_term || e.term > m.term || e.term <= term_id(0))
              return malformed("append_request: batch terms out of order");
            // Keeps offsets far from overflow.
            if (e.last.value() > (int64_t(1) << 62)) return malformed("append_request: offset");
            expect = e.last.next();
            prev_term = e.term;
          }
        } else if constexpr (std::is_same_v<T, append_response>) {
          if (b.match < offset::none() || b.rejected_prev < offset::none() ||
              b.hint_offset < offset::none() || b.hint_term < term_id(0))
            return malformed("append_response: bad offsets");
        } else if constexpr (std::is_same_v<T, heartbeat_request>) {
          if (b.commit < offset::none()) return malformed("heartbeat_request: bad commit");
        } else if constexpr (std::is_same_v<T, reset_request>) {
          if ((b.start < offset(0)) || (b.start_prev_term < term_id(0)) ||
              (b.start_prev_term > m.term) || (b.config_offset < offset::none()) ||
              b.start.value() > (int64_t(1) << 62))
            return malformed("reset_request: bad start");
          membership c = b.config;
          if (!c.normalize() || !(c == b.config) || c.voters.empty())
            return malformed("reset_request: bad membership");
        }
        return ok_status();
      },
      m.body);
}

std::vector<std::byte> encode(const message& m) {
  std::vector<std::byte> out;
  encode_into(out, m);
  return out;
}

void encode_into(std::vector<std::byte>& out, const message& m) {
  const size_t start = out.size();
  if (const auto* a = std::get_if<append_request>(&m.body)) {
    // One allocation for the whole message: the payloads dominate its size.
    size_t payloads = 0;
    for (const batch& b : a->batches)
      payloads += b.payload.size() + 64;
    out.reserve(start + 128 + payloads);
  }
  writer w(out);
  w.put<uint16_t>(message_magic);
  w.put<uint8_t>(version);
  w.put<uint8_t>(static_cast<uint8_t>(kind_of(m.body)));
  w.put<uint64_t>(m.group.value());
  w.put<uint64_t>(m.from.value());
  w.put<uint64_t>(m.to.value());
  put_term(w, m.term);
  put_body(w, m.body);
  KEEL_RAFT_ASSERT(out.size() - start <= max_message_bytes,
                   "encoded message exceeds the size limit");
}

result<message> decode(std::span<const std::byte> bytes) {
  if (bytes.size() > max_message_bytes) return malformed("message: too large");
  reader r(bytes);
  uint16_t magic = 0;
  uint8_t ver = 0;
  uint8_t k = 0;
  uint64_t group = 0, from = 0, to = 0;
  message m;
  if (!r.get(magic) || !r.get(ver) || !r.get(k)) return malformed("message: truncated header");
  if (magic != message_magic) return malformed("message: bad magic");
  if (ver != version) return make_error(errc::unsupported_version, "message: unknown version");
  if (!known_kind(k)) return malformed("message: unknown kind");
  if (!r.get(group) || !r.get(from) || !r.get(to) || !get_term(r, m.term))
    return malformed("message: truncated header");
  m.group = group_id(group);
  m.from = node_id(from);
  m.to = node_id(to);
  auto body = get_body(r, static_cast<kind>(k));
  if (!body.ok()) return body.err();
  if (r.remaining() != 0) return malformed("message: trailing bytes");
  m.body = std::move(*body);
  auto v = validate(m);
  if (!v.ok()) return v.err();
  return m;
}

shared_bytes encode_membership(const membership& config) {
  std::vector<std::byte> out;
  writer w(out);
  put_membership(w, config);
  return shared_bytes(std::move(out));
}

result<membership> decode_membership(std::span<const std::byte> bytes) {
  reader r(bytes);
  auto c = get_membership(r);
  if (!c.ok()) return c;
  if (r.remaining() != 0) return malformed("membership: trailing bytes");
  return c;
}

std::vector<std::byte> encode_heartbeat_frame(const std::vector<message>& heartbeats) {
  KEEL_RAFT_ASSERT(!heartbeats.empty() && heartbeats.size() <= max_heartbeats_per_frame,
                   "heartbeat frame needs 1..max heartbeats");
  const kind k = kind_of(heartbeats.front().body);
  KEEL_RAFT_ASSERT(k == kind::heartbeat_request || k == kind::heartbeat_response,
                   "heartbeat frame carries heartbeats only");
  std::vector<std::byte> out;
  writer w(out);
  w.put<uint16_t>(heartbeat_magic);
  w.put<uint8_t>(version);
  w.put<uint8_t>(static_cast<uint8_t>(k));
  w.put<uint64_t>(heartbeats.front().from.value());
  w.put<uint64_t>(heartbeats.front().to.value());
  w.put<uint32_t>(static_cast<uint32_t>(heartbeats.size()));
  for (const message& m : heartbeats) {
    KEEL_RAFT_ASSERT(
        m.from == heartbeats.front().from && m.to == heartbeats.front().to && kind_of(m.body) == k,
        "heartbeat frame: one sender, one recipient, one kind");
    w.put<uint64_t>(m.group.value());
    put_term(w, m.term);
    put_body(w, m.body);
  }
  return out;
}

result<std::vector<message>> decode_heartbeat_frame(std::span<const std::byte> bytes) {
  reader r(bytes);
  uint16_t magic = 0;
  uint8_t ver = 0, k = 0;
  uint64_t from = 0, to = 0;
  uint32_t count = 0;
  if (!r.get(magic) || !r.get(ver) || !r.get(k) || !r.get(from) || !r.get(to) || !r.get(count))
    return malformed("heartbeat frame: truncated header");
  if (magic != heartbeat_magic) return malformed("heartbeat frame: bad magic");
  if (ver != version) return make_error(errc::unsupported_version, "heartbeat frame: version");
  if (k != uint8_t(kind::heartbeat_request) && k != uint8_t(kind::heartbeat_response))
    return malformed("heartbeat frame: not a heartbeat kind");
  // Smallest entry: group + term + response body = 24 bytes.
  if (count > max_heartbeats_per_frame || uint64_t(count) * 24 > r.remaining())
    return malformed("heartbeat frame: count out of bounds");
  std::vector<message> out;
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    message m;
    uint64_t group = 0;
    if (!r.get(group) || !get_term(r, m.term)) return malformed("heartbeat frame: truncated");
    m.group = group_id(group);
    m.from = node_id(from);
    m.to = node_id(to);
    auto body = get_body(r, static_cast<kind>(k));
    if (!body.ok()) return body.err();
    m.body = std::move(*body);
    auto v = validate(m);
    if (!v.ok()) return v.err();
    out.push_back(std::move(m));
  }
  if (r.remaining() != 0) return malformed("heartbeat frame: trailing bytes");
  return out;
}

}  // namespace keel::raft::codec
