//! Command-line options shared by `qxl-vmm`'s subcommands.
//!
//! The SPICE options follow QEMU's `-spice` names, which users and libvirt
//! already know: `--spice port=5900,addr=127.0.0.1,password=secret,
//! disable-ticketing=on,image-compression=auto_glz,streaming-video=off`.
//! Each may also be given as its own flag (`--port 5901`, `--password x`, …).

use std::net::IpAddr;
use std::time::Duration;

use spice_server::server::{ImageCompression, ServerConfig};

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
    /// `streaming-video=` as given (`off`, `all`, `filter`).
    pub streaming_video: String,
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
            "image-compression" => match value {
                "auto_glz" | "auto_lz" | "quic" | "glz" | "lz" | "lz4" | "off" => {
                    value.clone_into(&mut self.image_compression);
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "image-compression={value}: one of auto_glz, auto_lz, quic, glz, lz, lz4, off"
                    )));
                }
            },
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
        let image_compression = match self.image_compression.as_str() {
            "off" => ImageCompression::Off,
            "lz4" | "auto_glz" | "auto_lz" => ImageCompression::Auto,
            other => {
                log::warn!(
                    "image-compression={other} is not implemented yet; using LZ4 where the client supports it"
                );
                ImageCompression::Auto
            }
        };
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
}
