//! Command-line options shared by `qxl-vmm`'s subcommands.
//!
//! The SPICE options follow QEMU's `-spice` names, which users and libvirt
//! already know: `--spice port=5900,addr=127.0.0.1,password=secret,
//! disable-ticketing=on,image-compression=auto_glz,jpeg-wan-compression=auto,
//! zlib-glz-wan-compression=auto,streaming-video=off`.
//! Each may also be given as its own flag (`--port 5901`, `--password x`, …).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spice_server::server::{ImageCompression, ServerConfig, WanCompression};

use crate::error::{Error, Result};

/// The SPICE part of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiceOptions {
    /// Listen address (`addr=`), loopback by default.
    pub addr: IpAddr,
    /// TCP port (`port=`), 5900 by default.
    pub port: u16,
    /// Ticket (`password=`).
    pub password: Option<String>,
    /// Seconds a ticket stays valid (`password-expiry=`; not a QEMU `-spice` key:
    /// QEMU sets expiry through its monitor).
    pub password_expiry: Option<u64>,
    /// Accept any client (`disable-ticketing=on`).
    pub disable_ticketing: bool,
    /// `image-compression=` as given (QEMU names: `auto_glz`, `auto_lz`, `quic`,
    /// `glz`, `lz`, `lz4`, `off`).
    pub image_compression: String,
    /// `jpeg-wan-compression=` as given (`auto`, `never`, `always`).
    pub jpeg_wan_compression: String,
    /// `zlib-glz-wan-compression=` as given (`auto`, `never`, `always`).
    pub zlib_glz_wan_compression: String,
    /// `streaming-video=` as given (`off`, `all`, `filter`).
    pub streaming_video: String,
}

/// The server's mode for a QEMU `image-compression=` name.
pub fn image_compression(name: &str) -> Option<ImageCompression> {
    Some(match name {
        "off" => ImageCompression::Off,
        "auto_glz" => ImageCompression::AutoGlz,
        "auto_lz" => ImageCompression::AutoLz,
        "quic" => ImageCompression::Quic,
        "glz" => ImageCompression::Glz,
        "lz" => ImageCompression::Lz,
        "lz4" => ImageCompression::Lz4,
        _ => return None,
    })
}

/// The server's setting for a QEMU `*-wan-compression=` name.
pub fn wan_compression(name: &str) -> Option<WanCompression> {
    Some(match name {
        "auto" => WanCompression::Auto,
        "never" => WanCompression::Never,
        "always" => WanCompression::Always,
        _ => return None,
    })
}

impl Default for SpiceOptions {
    fn default() -> Self {
        Self {
            addr: IpAddr::from([127, 0, 0, 1]),
            port: 5900,
            password: None,
            password_expiry: None,
            disable_ticketing: false,
            image_compression: "auto_glz".into(),
            jpeg_wan_compression: "auto".into(),
            zlib_glz_wan_compression: "auto".into(),
            streaming_video: "off".into(),
        }
    }
}

fn on_off(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(Error::Usage(format!("{key}={v}: expected on or off"))),
    }
}

/// The value after `flag` on the command line.
///
/// # Errors
/// [`Error::Usage`] when the command line ends there.
pub fn flag_value<'a>(rest: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str> {
    rest.next()
        .map(String::as_str)
        .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
}

/// `flag`'s value `s` as a number.
///
/// # Errors
/// [`Error::Usage`] when it is not one.
pub fn flag_number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::Usage(format!("{flag} {s}: not a number")))
}

/// Sets `stop` when the user presses Ctrl-C (SIGINT or SIGTERM).
///
/// # Errors
/// [`Error::Usage`] when the handler cannot be installed (one per process).
pub fn stop_on_ctrl_c(stop: Arc<AtomicBool>) -> Result<()> {
    ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))
}

impl SpiceOptions {
    /// Apply one `key=value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| Error::Usage(format!("port={value}: not a port number")))?;
            }
            "addr" => {
                self.addr = value
                    .parse()
                    .map_err(|_| Error::Usage(format!("addr={value}: not an IP address")))?;
            }
            "password" => self.password = Some(value.to_owned()),
            "password-expiry" => {
                self.password_expiry = Some(value.parse().map_err(|_| {
                    Error::Usage(format!("password-expiry={value}: not a number of seconds"))
                })?);
            }
            "disable-ticketing" => self.disable_ticketing = on_off(key, value)?,
            "image-compression" => {
                if image_compression(value).is_none() {
                    return Err(Error::Usage(format!(
                        "image-compression={value}: one of auto_glz, auto_lz, quic, glz, lz, lz4, off"
                    )));
                }
                value.clone_into(&mut self.image_compression);
            }
            "jpeg-wan-compression" | "zlib-glz-wan-compression" => {
                if wan_compression(value).is_none() {
                    return Err(Error::Usage(format!(
                        "{key}={value}: one of auto, never, always"
                    )));
                }
                if key == "jpeg-wan-compression" {
                    value.clone_into(&mut self.jpeg_wan_compression);
                } else {
                    value.clone_into(&mut self.zlib_glz_wan_compression);
                }
            }
            "streaming-video" => match value {
                "off" | "all" | "filter" => value.clone_into(&mut self.streaming_video),
                _ => {
                    return Err(Error::Usage(format!(
                        "streaming-video={value}: one of off, all, filter"
                    )));
                }
            },
            _ => return Err(Error::Usage(format!("unknown SPICE option {key}"))),
        }
        Ok(())
    }

    /// Takes `flag` if it is one of the SPICE flags every subcommand has
    /// (`--spice LIST`, `--port`, `--addr`, `--password`,
    /// `--image-compression`, `--streaming-video`, each with a value from
    /// `rest`, and `--disable-ticketing`). Returns whether it was.
    ///
    /// # Errors
    /// [`Error::Usage`] for a missing or bad value.
    pub fn take_flag<'a>(
        &mut self,
        flag: &str,
        rest: &mut impl Iterator<Item = &'a String>,
    ) -> Result<bool> {
        match flag {
            "--spice" => self.set_list(flag_value(rest, flag)?)?,
            "--port" | "--addr" | "--password" | "--image-compression" | "--streaming-video" => {
                self.set(flag.trim_start_matches("--"), flag_value(rest, flag)?)?;
            }
            "--disable-ticketing" => self.disable_ticketing = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The server configuration for a user's own session (`demo`, `replay`,
    /// `boot`): without a password, the server runs without ticketing rather
    /// than refusing to start.
    ///
    /// # Errors
    /// As [`SpiceOptions::server_config`].
    pub fn local_server_config(mut self) -> Result<ServerConfig> {
        if self.password.is_none() {
            self.disable_ticketing = true;
        }
        self.server_config()
    }

    /// Apply a QEMU-style list `key=value,key=value`.
    pub fn set_list(&mut self, list: &str) -> Result<()> {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("{item}: expected key=value")))?;
            self.set(k, v)?;
        }
        Ok(())
    }

    /// The server configuration these options describe.
    ///
    /// Without a password and without `disable-ticketing=on` the server would
    /// accept nobody; like QEMU, that is refused.
    pub fn server_config(&self) -> Result<ServerConfig> {
        if self.password.is_none() && !self.disable_ticketing {
            return Err(Error::Usage(
                "give password=… or disable-ticketing=on (as QEMU's -spice requires)".into(),
            ));
        }
        let bad = |k: &str, v: &str| Error::Usage(format!("{k}={v}: unknown value"));
        let image_compression = image_compression(&self.image_compression)
            .ok_or_else(|| bad("image-compression", &self.image_compression))?;
        let jpeg_wan_compression = wan_compression(&self.jpeg_wan_compression)
            .ok_or_else(|| bad("jpeg-wan-compression", &self.jpeg_wan_compression))?;
        let zlib_glz_wan_compression = wan_compression(&self.zlib_glz_wan_compression)
            .ok_or_else(|| bad("zlib-glz-wan-compression", &self.zlib_glz_wan_compression))?;
        if self.streaming_video != "off" {
            log::warn!(
                "streaming-video={} is not implemented yet; frames are sent as images",
                self.streaming_video
            );
        }
        Ok(ServerConfig {
            addr: self.addr,
            port: self.port,
            password: self.password.clone(),
            ticket_expiry: self.password_expiry.map(Duration::from_secs),
            disable_ticketing: self.disable_ticketing,
            image_compression,
            jpeg_wan_compression,
            zlib_glz_wan_compression,
            ..ServerConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spice_options_qemu_list() {
        let mut o = SpiceOptions::default();
        o.set_list("port=5931,addr=127.0.0.2,password=s3cret,image-compression=off")
            .unwrap();
        assert_eq!(o.port, 5931);
        assert_eq!(o.addr, IpAddr::from([127, 0, 0, 2]));
        let c = o.server_config().unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!c.disable_ticketing);
        assert!(matches!(c.image_compression, ImageCompression::Off));
    }

    #[test]
    fn every_qemu_compression_name_maps_to_its_mode() {
        for (name, mode) in [
            ("off", ImageCompression::Off),
            ("auto_glz", ImageCompression::AutoGlz),
            ("auto_lz", ImageCompression::AutoLz),
            ("quic", ImageCompression::Quic),
            ("glz", ImageCompression::Glz),
            ("lz", ImageCompression::Lz),
            ("lz4", ImageCompression::Lz4),
        ] {
            let mut o = SpiceOptions::default();
            o.set_list(&format!("disable-ticketing=on,image-compression={name}"))
                .unwrap();
            assert_eq!(o.server_config().unwrap().image_compression, mode);
            assert_eq!(mode.name(), name);
        }
        let mut o = SpiceOptions::default();
        o.set_list(
            "disable-ticketing=on,jpeg-wan-compression=always,zlib-glz-wan-compression=never",
        )
        .unwrap();
        let c = o.server_config().unwrap();
        assert_eq!(c.jpeg_wan_compression, WanCompression::Always);
        assert_eq!(c.zlib_glz_wan_compression, WanCompression::Never);
        assert_eq!(
            SpiceOptions::default().image_compression,
            ImageCompression::AutoGlz.name()
        );
        o.set_list("jpeg-wan-compression=sometimes").unwrap_err();
    }

    #[test]
    fn spice_options_reject_bad_values() {
        let mut o = SpiceOptions::default();
        o.set_list("port=99999").unwrap_err();
        o.set_list("disable-ticketing=maybe").unwrap_err();
        o.set_list("image-compression=zip").unwrap_err();
        o.set_list("bogus=1").unwrap_err();
        o.set_list("port").unwrap_err();
        // No password and ticketing enabled: refused like QEMU.
        SpiceOptions::default().server_config().unwrap_err();
        o.set_list("disable-ticketing=on").unwrap();
        o.server_config().unwrap();
    }

    #[test]
    fn subcommands_take_the_spice_flags_and_leave_the_rest() {
        let args: Vec<String> = [
            "--port",
            "5933",
            "--frames",
            "3",
            "--spice",
            "addr=127.0.0.3,image-compression=lz",
            "--disable-ticketing",
            "--password",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut o = SpiceOptions::default();
        let mut left = Vec::new();
        let mut it = args.iter();
        let mut last = Ok(());
        while let Some(a) = it.next() {
            match o.take_flag(a, &mut it) {
                Ok(true) => {}
                Ok(false) => left.push(a.clone()),
                Err(e) => last = Err(e),
            }
        }
        assert_eq!(left, ["--frames", "3"]);
        assert_eq!(o.port, 5933);
        assert_eq!(o.addr, "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(o.image_compression, "lz");
        assert!(o.disable_ticketing);
        // `--password` at the end has no value.
        assert!(matches!(last, Err(Error::Usage(m)) if m.contains("needs a value")));
        assert_eq!(flag_number::<u32>("12", "--fps").unwrap(), 12);
        flag_number::<u32>("x", "--fps").unwrap_err();
        // Without a password a local session serves without ticketing; with
        // one, ticketing stays on.
        assert!(
            SpiceOptions::default()
                .local_server_config()
                .unwrap()
                .disable_ticketing
        );
        let mut p = SpiceOptions::default();
        p.set("password", "pw").unwrap();
        let c = p.local_server_config().unwrap();
        assert!(!c.disable_ticketing);
        assert_eq!(c.password.as_deref(), Some("pw"));
    }
}
