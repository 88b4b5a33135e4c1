//! Session tickets whose keys several edge processes share.
//!
//! Without `ticket_key_file`, each process uses rustls' own ticketer
//! (random keys, rotated every 6 hours), so a client resumes only on the
//! process that issued its ticket. With the file, every process derives
//! the same keys from the secret in it, and a client resumes on any node:
//! what a fleet behind one DNS name or an L4 balancer needs.
//!
//! The secret is never used as a key directly. Time is cut into 6-hour
//! periods and each period gets its own key and key name from HKDF-SHA256
//! (RFC 5869) over the secret and the period number, so keys rotate on
//! every node at the same moment with no coordination beyond roughly
//! synchronised clocks, and one key seals at most one period's tickets
//! (random 96-bit nonces stay far below the 2^32-messages-per-key bound of
//! NIST SP 800-38D §8.3 even at 100k tickets/s). A ticket opens during its
//! own period and the next (like rustls' rotator: 6 to 12 hours), and the
//! previous period's ticket also opens a period early on a node whose
//! clock runs behind.
//!
//! The trade-off, as with any shared ticket key: stealing the file breaks
//! the confidentiality of every session resumed with its tickets; keep it
//! as private as the certificate keys, and replace it to cut that off
//! (outstanding tickets then simply stop resuming).
//!
//! Ticket layout, as rustls' own: key name (16) | nonce (12) | sealed
//! session state | tag (16), the key name authenticated as associated data.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::{aead, hkdf, rand};
use rustls::server::ProducesTickets;

/// Length of one key period: 6 hours, as rustls' rotating ticketer, so
/// resumption lasts as long with and without a shared file.
const PERIOD_SECS: u64 = 6 * 60 * 60;

/// Fewest secret bytes accepted: 256 bits, the AEAD key size.
pub const MIN_SECRET_LEN: usize = 32;

const KEY_NAME_LEN: usize = 16;
const NONCE_LEN: usize = aead::NONCE_LEN;
const TAG_LEN: usize = 16;
/// Largest ticket we try to open: rustls' session state is a few hundred
/// bytes plus the client's certificate chain, which edge never asks for.
/// Rejecting early bounds the work an attacker's junk ticket costs.
const MAX_TICKET_LEN: usize = 16 * 1024;

/// Separates these keys from any other use of the same secret.
const SALT: &[u8] = b"edge session-ticket keys v1";

/// The secret read from a ticket key file.
pub struct TicketSecret(hkdf::Prk);

impl fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketSecret(..)")
    }
}

impl TicketSecret {
    /// Wraps raw secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(format!(
                "holds {} bytes; a ticket key needs at least {MIN_SECRET_LEN} random bytes (`openssl rand 48 > ticket.key`)",
                bytes.len()
            ));
        }
        Ok(TicketSecret(
            hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(bytes),
        ))
    }

    /// Reads a ticket key file; the error names the file.
    pub fn read(file: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        Self::new(&bytes).map_err(|e| format!("{}: {e}", file.display()))
    }

    fn period_key(&self, period: u64) -> PeriodKey {
        let mut name = [0u8; KEY_NAME_LEN];
        let mut key = [0u8; 32];
        let period = period.to_be_bytes();
        self.expand(&[b"name", &period], &mut name);
        self.expand(&[b"key", &period], &mut key);
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key)
            .expect("32 bytes is the ChaCha20-Poly1305 key length");
        PeriodKey {
            name,
            key: aead::LessSafeKey::new(key),
        }
    }

    fn expand(&self, info: &[&[u8]], out: &mut [u8]) {
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        self.0
            .expand(info, Len(out.len()))
            .and_then(|okm| okm.fill(out))
            .expect("HKDF-SHA256 expands up to 8160 bytes");
    }
}

struct PeriodKey {
    name: [u8; KEY_NAME_LEN],
    key: aead::LessSafeKey,
}

/// The keys usable at one moment: previous, current and next period.
struct KeyRing {
    secret: Arc<TicketSecret>,
    current: u64,
    keys: [PeriodKey; 3],
}

impl KeyRing {
    fn new(secret: Arc<TicketSecret>, period: u64) -> Self {
        let keys = [
            secret.period_key(period.saturating_sub(1)),
            secret.period_key(period),
            secret.period_key(period + 1),
        ];
        KeyRing {
            secret,
            current: period,
            keys,
        }
    }

    /// Seals `plain` with the current period's key and `nonce`.
    fn seal(&self, plain: &[u8], nonce: [u8; NONCE_LEN]) -> Option<Vec<u8>> {
        let key = &self.keys[1];
        let mut ticket = Vec::with_capacity(KEY_NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(key.name),
                &mut ticket[KEY_NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// Opens a ticket sealed in the previous, current or next period.
    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < KEY_NAME_LEN + NONCE_LEN + TAG_LEN || ticket.len() > MAX_TICKET_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(KEY_NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.name == name)?;
        let mut buf = sealed.to_vec();
        let plain_len = key
            .key
            .open_in_place(
                aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
                aead::Aad::from(&key.name),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

/// A [`ProducesTickets`] with keys derived from a shared secret.
pub struct SharedTicketer {
    ring: ArcSwap<KeyRing>,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("period", &self.ring.load().current)
            .finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// A ticketer for `secret`.
    pub fn new(secret: TicketSecret) -> Self {
        SharedTicketer {
            ring: ArcSwap::from_pointee(KeyRing::new(Arc::new(secret), period(now()))),
        }
    }

    /// Uses `secret` from now on; tickets of the old secret stop opening.
    pub fn replace(&self, secret: TicketSecret) {
        self.ring
            .store(Arc::new(KeyRing::new(Arc::new(secret), period(now()))));
    }

    /// The key ring for `now` (seconds since the epoch), rebuilt when the
    /// period has changed. Concurrent rebuilds derive identical keys, so
    /// whichever store lands last is as good as the other.
    fn ring_at(&self, now: u64) -> arc_swap::Guard<Arc<KeyRing>> {
        let ring = self.ring.load();
        let period = period(now);
        if ring.current == period {
            return ring;
        }
        self.ring
            .store(Arc::new(KeyRing::new(ring.secret.clone(), period)));
        self.ring.load()
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    /// The lifetime hint: one period, the least a ticket stays valid.
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        // A random nonce, not a counter: several processes share each key.
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).ok()?;
        self.ring_at(now()).seal(plain, nonce)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.ring_at(now()).open(cipher)
    }
}

fn period(now: u64) -> u64 {
    now / PERIOD_SECS
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secret: &[u8], period: u64) -> KeyRing {
        KeyRing::new(Arc::new(TicketSecret::new(secret).unwrap()), period)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn two_processes_with_one_secret_open_each_others_tickets() {
        let a = ring(SECRET, 1000);
        let b = ring(SECRET, 1000);
        let ticket = a.seal(b"session state", [7; 12]).unwrap();
        assert_eq!(b.open(&ticket).as_deref(), Some(&b"session state"[..]));
        assert_ne!(&ticket[KEY_NAME_LEN + NONCE_LEN..][..13], b"session state");
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_neighbours_only() {
        let ticket = ring(SECRET, 1000).seal(b"s", [1; 12]).unwrap();
        for (period, opens) in [
            (998, false),
            (999, true), // a node whose clock runs behind
            (1000, true),
            (1001, true),
            (1002, false),
        ] {
            assert_eq!(
                ring(SECRET, period).open(&ticket).is_some(),
                opens,
                "{period}"
            );
        }
    }

    #[test]
    fn another_secret_or_a_tampered_ticket_does_not_open() {
        let a = ring(SECRET, 5);
        let ticket = a.seal(b"state", [2; 12]).unwrap();
        let other = ring(&[9u8; 32], 5);
        assert!(other.open(&ticket).is_none());
        for at in [0, KEY_NAME_LEN, KEY_NAME_LEN + NONCE_LEN, ticket.len() - 1] {
            let mut bad = ticket.clone();
            bad[at] ^= 1;
            assert!(a.open(&bad).is_none(), "flipped byte {at}");
        }
        assert!(
            a.open(&ticket[..KEY_NAME_LEN + NONCE_LEN + TAG_LEN - 1])
                .is_none()
        );
        assert!(a.open(&[]).is_none());
        assert!(a.open(&vec![0; MAX_TICKET_LEN + 1]).is_none());
    }

    #[test]
    fn periods_have_distinct_keys() {
        let r = ring(SECRET, 10);
        assert_ne!(r.keys[0].name, r.keys[1].name);
        assert_ne!(r.keys[1].name, r.keys[2].name);
        let t9 = ring(SECRET, 9).seal(b"x", [0; 12]).unwrap();
        let t10 = r.seal(b"x", [0; 12]).unwrap();
        assert_ne!(t9, t10, "same nonce, different period key");
    }

    #[test]
    fn short_secrets_are_refused() {
        let error = TicketSecret::new(&[1; 31]).unwrap_err();
        assert!(error.contains("at least 32 random bytes"), "{error}");
    }

    #[test]
    fn ticketer_round_trip_through_the_trait() {
        let t = SharedTicketer::new(TicketSecret::new(SECRET).unwrap());
        let ticket = t.encrypt(b"hello").unwrap();
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"hello"[..]));
        t.replace(TicketSecret::new(&[3; 40]).unwrap());
        assert!(
            t.decrypt(&ticket).is_none(),
            "a replaced secret drops old tickets"
        );
        assert_eq!(t.lifetime(), 6 * 3600);
    }
}
