//! SPICE ticket authentication.
//!
//! # Primer
//!
//! The server sends a fresh RSA-1024 public key (DER SubjectPublicKeyInfo,
//! 162 bytes) in its `SpiceLinkReply`. The client encrypts `password + '\0'`
//! with RSA PKCS#1 v2.0 OAEP (SHA-1, MGF1-SHA-1, empty label) and sends the
//! 128-byte ciphertext. The server decrypts it and compares the password with
//! the configured ticket; a ticket also has an expiry time. Passwords are at
//! most 60 bytes (`SPICE_MAX_PASSWORD_LENGTH`).
//!
//! With ticketing disabled every ticket is accepted (the 128 bytes are still
//! read). With ticketing enabled and no password set, nobody gets in.
//!
//! The key is generated once per server start. `rsa` 0.10 is used: its
//! private-key operations are constant-time (RUSTSEC-2023-0071, "Marvin", is
//! fixed there), and the password comparison here is constant-time too.

use std::sync::Mutex;
use std::time::Instant;

use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, PrivateKey};

use crate::Error;
use crate::wire::{MAX_PASSWORD_LENGTH, TICKET_CIPHER_BYTES, TICKET_PUBKEY_BYTES};

/// A password and when it stops being valid.
#[derive(Clone)]
struct Ticket {
    password: Vec<u8>,
    expires: Option<Instant>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("password", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// The server's RSA key and its current ticket.
#[derive(Debug)]
pub struct Ticketing {
    key: PrivateKey,
    public_der: [u8; TICKET_PUBKEY_BYTES],
    disabled: bool,
    ticket: Mutex<Option<Ticket>>,
}

/// Checks a password's length against the protocol limit.
pub fn check_password(password: &str) -> Result<(), Error> {
    if password.len() > MAX_PASSWORD_LENGTH || password.as_bytes().contains(&0) {
        return Err(Error::PasswordTooLong);
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths'
/// maximum (capped by the protocol limit), not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut pa = [0u8; MAX_PASSWORD_LENGTH + 1];
    let mut pb = [0u8; MAX_PASSWORD_LENGTH + 1];
    let la = a.len().min(MAX_PASSWORD_LENGTH + 1);
    let lb = b.len().min(MAX_PASSWORD_LENGTH + 1);
    pa[..la].copy_from_slice(&a[..la]);
    pb[..lb].copy_from_slice(&b[..lb]);
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in pa.iter().zip(pb.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Ticketing {
    /// Generates a key pair. `disabled` accepts every ticket.
    pub fn new(disabled: bool) -> Result<Self, Error> {
        let mut rng = getrandom::SysRng;
        let key = PrivateKey::new(&mut rng, 1024).map_err(|e| Error::Crypto(e.to_string()))?;
        let der = key
            .as_public_key()
            .to_public_key_der()
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let public_der: [u8; TICKET_PUBKEY_BYTES] = der
            .as_bytes()
            .try_into()
            .map_err(|_| Error::Crypto(format!("public key is {} bytes", der.as_bytes().len())))?;
        Ok(Self {
            key,
            public_der,
            disabled,
            ticket: Mutex::new(None),
        })
    }

    /// The public key as sent in `SpiceLinkReply`.
    pub const fn public_key_der(&self) -> &[u8; TICKET_PUBKEY_BYTES] {
        &self.public_der
    }

    /// True when any ticket is accepted.
    pub const fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Sets (or with `None` clears) the password, valid until `expires`.
    pub fn set_password(
        &self,
        password: Option<&str>,
        expires: Option<Instant>,
    ) -> Result<(), Error> {
        if let Some(p) = password {
            check_password(p)?;
        }
        let mut t = self
            .ticket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t = password.map(|p| Ticket {
            password: p.as_bytes().to_vec(),
            expires,
        });
        Ok(())
    }

    /// Checks an encrypted ticket.
    pub fn verify(&self, cipher: &[u8; TICKET_CIPHER_BYTES]) -> Result<(), Error> {
        if self.disabled {
            return Ok(());
        }
        let ticket = self
            .ticket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(Error::AuthFailed("no password set"))?;
        let plain = self
            .key
            .decrypt(Oaep::<sha1::Sha1>::new(), cipher)
            .map_err(|_| Error::AuthFailed("ticket does not decrypt"))?;
        // The client sends the password with its NUL; stop at the first NUL.
        let end = plain.iter().position(|&b| b == 0).unwrap_or(plain.len());
        let given = plain.get(..end).unwrap_or(&[]);
        if given.len() > MAX_PASSWORD_LENGTH {
            return Err(Error::AuthFailed("password too long"));
        }
        let matches = constant_time_eq(given, &ticket.password);
        if ticket.expires.is_some_and(|e| Instant::now() >= e) {
            return Err(Error::AuthFailed("ticket expired"));
        }
        if !matches {
            return Err(Error::AuthFailed("wrong password"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePublicKey;

    fn encrypt(t: &Ticketing, plain: &[u8]) -> [u8; 128] {
        let pk = rsa::PublicKey::from_public_key_der(t.public_key_der());
        let c = pk
            .ok()
            .and_then(|pk| pk.oaep_encrypt::<sha1::Sha1>(plain).ok())
            .unwrap_or_default();
        c.try_into().unwrap_or([0; 128])
    }

    #[test]
    fn ticket_checks() -> Result<(), Error> {
        let t = Ticketing::new(false)?;
        assert_eq!(t.public_key_der().len(), 162);
        let _ = t.verify(&encrypt(&t, b"\0")).expect_err("no password set");
        t.set_password(Some("s3cret"), None)?;
        t.verify(&encrypt(&t, b"s3cret\0"))?;
        let _ = t
            .verify(&encrypt(&t, b"s3cre\0"))
            .expect_err("unexpected result");
        let _ = t
            .verify(&encrypt(&t, b"s3crett\0"))
            .expect_err("unexpected result");
        let _ = t.verify(&[0x55; 128]).expect_err("unexpected result");
        t.set_password(Some("s3cret"), Some(Instant::now()))?;
        let _ = t.verify(&encrypt(&t, b"s3cret\0")).expect_err("expired");
        let _ = t
            .set_password(Some(&"x".repeat(61)), None)
            .expect_err("unexpected result");
        let open = Ticketing::new(true)?;
        open.verify(&[0; 128])?;
        Ok(())
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(constant_time_eq(b"", b""));
    }
}
