//! `ConnectedHardware`: the USB, PCI and serial devices sysfs lists, as a
//! periodic snapshot, and at once when one is plugged in or removed.
//!
//! Plug and unplug are seen by polling sysfs's device lists every couple of
//! seconds (`Hardware::poll`: a directory listing each, attributes read
//! only on a change), not through netlink kobject uevents: the hardened
//! systemd unit refuses AF_NETLINK sockets (RestrictAddressFamilies), and a
//! listing works in a container without a network namespace of the host. A
//! device plugged in and out again between two polls is not seen.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use shrike_common::schema::{self as sm, ExtraDetails};

/// One device: its key (bus and sysfs name) and the payload item.
pub type Devices = BTreeMap<String, sm::ConnectedHardware>;

fn read(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn driver(dev: &Path) -> Option<String> {
    std::fs::read_link(dev.join("driver")).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The device names of each bus: what a poll compares.
fn listing(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (bus, dir) in [("usb", "bus/usb/devices"), ("pci", "bus/pci/devices"), ("tty", "class/tty")] {
        v.extend(names(&sys.join(dir)).into_iter().map(|n| format!("{bus}:{n}")));
    }
    v
}

/// PCI class code (0xCCSSPP) to a readable sub-category.
fn pci_class(class: &str) -> &'static str {
    let code = u32::from_str_radix(class.trim_start_matches("0x"), 16).unwrap_or(u32::MAX) >> 16;
    match code {
        0x01 => "Storage controller",
        0x02 => "Network controller",
        0x03 => "Display controller",
        0x04 => "Multimedia controller",
        0x05 => "Memory controller",
        0x06 => "Bridge",
        0x07 => "Communication controller",
        0x08 => "System peripheral",
        0x09 => "Input device controller",
        0x0c => "Serial bus controller",
        0x0d => "Wireless controller",
        0x10 => "Encryption controller",
        _ => "Other",
    }
}

/// Every device of sysfs rooted at `sys` (normally /sys).
pub fn devices(sys: &Path) -> Devices {
    let mut out = Devices::new();
    let usb = sys.join("bus/usb/devices");
    for name in names(&usb) {
        let dev = usb.join(&name);
        // Interfaces (1-1:1.0) are parts of a device, not devices.
        let (Some(vendor), Some(product)) = (read(&dev.join("idVendor")), read(&dev.join("idProduct")))
        else {
            continue;
        };
        let mut x = ExtraDetails::new();
        x.insert("BusPath".into(), name.clone());
        x.insert("VendorId".into(), vendor.clone());
        x.insert("ProductId".into(), product.clone());
        for (attr, key) in
            [("serial", "Serial"), ("manufacturer", "Manufacturer"), ("bDeviceClass", "DeviceClass")]
        {
            if let Some(v) = read(&dev.join(attr)) {
                x.insert(key.into(), v);
            }
        }
        if let Some(d) = driver(&dev) {
            x.insert("Driver".into(), d);
        }
        let title = match (read(&dev.join("manufacturer")), read(&dev.join("product"))) {
            (Some(m), Some(p)) => format!("{m} {p}"),
            (None, Some(p)) => p,
            _ => format!("{vendor}:{product}"),
        };
        let sub = if name.starts_with("usb") { "Root hub" } else { "Device" };
        out.insert(format!("usb:{name}"), item("USB", sub, title, x));
    }
    let pci = sys.join("bus/pci/devices");
    for name in names(&pci) {
        let dev = pci.join(&name);
        let (Some(vendor), Some(device)) = (read(&dev.join("vendor")), read(&dev.join("device"))) else {
            continue;
        };
        let class = read(&dev.join("class")).unwrap_or_default();
        let mut x = ExtraDetails::new();
        x.insert("Slot".into(), name.clone());
        x.insert("VendorId".into(), vendor.clone());
        x.insert("DeviceId".into(), device.clone());
        x.insert("Class".into(), class.clone());
        if let Some(d) = driver(&dev) {
            x.insert("Driver".into(), d);
        }
        out.insert(format!("pci:{name}"), item("PCI", pci_class(&class), format!("{vendor}:{device}"), x));
    }
    let tty = sys.join("class/tty");
    for name in names(&tty) {
        let dev = tty.join(&name);
        // Serial ports only: a hardware device behind them (consoles and
        // ptys have none), and for 8250 ports a UART found (type 0: none).
        if !dev.join("device").exists()
            || name.starts_with("tty") && name[3..].chars().all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if read(&dev.join("type")).is_some_and(|t| t == "0") {
            continue;
        }
        let mut x = ExtraDetails::new();
        let drv = driver(&dev.join("device"));
        if let Some(d) = &drv {
            x.insert("Driver".into(), d.clone());
        }
        let sub = if name.starts_with("ttyUSB") || name.starts_with("ttyACM") {
            "USB serial"
        } else {
            "Serial port"
        };
        out.insert(format!("tty:{name}"), item("Serial", sub, format!("/dev/{name}"), x));
    }
    out
}

fn item(category: &str, sub: &str, name: String, extra_details: ExtraDetails) -> sm::ConnectedHardware {
    sm::ConnectedHardware {
        hardware_category: category.into(),
        hardware_sub_category: sub.into(),
        hardware_name: name,
        extra_details,
    }
}

/// The snapshot event (empty when sysfs lists nothing).
pub fn snapshot(devs: &Devices) -> sm::Event {
    if devs.is_empty() {
        return sm::Event::empty(sm::Kind::ConnectedHardware);
    }
    sm::Event::new(sm::Payload::ConnectedHardware(devs.values().cloned().collect()))
}

/// Watches sysfs for devices plugged in or removed.
pub struct Hardware {
    sys: PathBuf,
    listing: Vec<String>,
    known: Devices,
}

impl Hardware {
    pub fn new(sys: &Path) -> Hardware {
        Hardware { sys: sys.to_path_buf(), listing: listing(sys), known: devices(sys) }
    }

    /// A ConnectedHardware event of what changed since the last poll (each
    /// item's `ExtraDetails.Change`: `Added` or `Removed`), or None.
    pub fn poll(&mut self) -> Option<sm::Event> {
        let now = listing(&self.sys);
        if now == self.listing {
            return None;
        }
        self.listing = now;
        let devs = devices(&self.sys);
        let mut changed = Vec::new();
        for (k, d) in &devs {
            if !self.known.contains_key(k) {
                let mut d = d.clone();
                d.extra_details.insert("Change".into(), "Added".into());
                changed.push(d);
            }
        }
        for (k, d) in &self.known {
            if !devs.contains_key(k) {
                let mut d = d.clone();
                d.extra_details.insert("Change".into(), "Removed".into());
                changed.push(d);
            }
        }
        self.known = devs;
        (!changed.is_empty()).then(|| sm::Event::new(sm::Payload::ConnectedHardware(changed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A fake sysfs: one PCI NIC with its driver, a USB stick with an
    /// interface, a 16550 port, a missing 8250 port, a console.
    fn fake(root: &Path) {
        let pci = root.join("bus/pci/devices/0000:00:03.0");
        write(&pci.join("vendor"), "0x8086\n");
        write(&pci.join("device"), "0x100e\n");
        write(&pci.join("class"), "0x020000\n");
        std::fs::create_dir_all(root.join("bus/pci/drivers/e1000")).unwrap();
        std::os::unix::fs::symlink(root.join("bus/pci/drivers/e1000"), pci.join("driver")).unwrap();
        let usb = root.join("bus/usb/devices/1-1");
        write(&usb.join("idVendor"), "0781\n");
        write(&usb.join("idProduct"), "5567\n");
        write(&usb.join("manufacturer"), "SanDisk\n");
        write(&usb.join("product"), "Cruzer Blade\n");
        write(&usb.join("serial"), "4C530001\n");
        write(&root.join("bus/usb/devices/1-1:1.0/bInterfaceClass"), "08\n");
        write(&root.join("class/tty/ttyS0/type"), "4\n");
        std::fs::create_dir_all(root.join("class/tty/ttyS0/device")).unwrap();
        write(&root.join("class/tty/ttyS1/type"), "0\n");
        std::fs::create_dir_all(root.join("class/tty/ttyS1/device")).unwrap();
        std::fs::create_dir_all(root.join("class/tty/tty1")).unwrap();
    }

    #[test]
    fn usb_pci_and_serial_devices_from_sysfs() {
        let dir = std::env::temp_dir().join(format!("shrike-hw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fake(&dir);
        let devs = devices(&dir);
        let keys: Vec<&str> = devs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["pci:0000:00:03.0", "tty:ttyS0", "usb:1-1"]);
        let nic = &devs["pci:0000:00:03.0"];
        assert_eq!(
            (nic.hardware_category.as_str(), nic.hardware_sub_category.as_str(), nic.hardware_name.as_str()),
            ("PCI", "Network controller", "0x8086:0x100e")
        );
        assert_eq!(nic.extra_details["Driver"], "e1000");
        let stick = &devs["usb:1-1"];
        assert_eq!(stick.hardware_name, "SanDisk Cruzer Blade");
        assert_eq!(stick.extra_details["Serial"], "4C530001");
        let ev = snapshot(&devs);
        assert_eq!(ev.kind(), sm::Kind::ConnectedHardware);
        ev.validate().unwrap();

        // Unplugged, then another plugged in: one event each.
        let mut hw = Hardware::new(&dir);
        assert!(hw.poll().is_none(), "nothing changed");
        std::fs::remove_dir_all(dir.join("bus/usb/devices/1-1")).unwrap();
        let ev = hw.poll().expect("the removal");
        let sm::Payload::ConnectedHardware(items) = &ev.payload else { panic!("{ev:?}") };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].extra_details["Change"], "Removed");
        assert_eq!(items[0].hardware_name, "SanDisk Cruzer Blade");
        write(&dir.join("bus/usb/devices/1-2/idVendor"), "1a86\n");
        write(&dir.join("bus/usb/devices/1-2/idProduct"), "7523\n");
        let ev = hw.poll().expect("the new device");
        let sm::Payload::ConnectedHardware(items) = &ev.payload else { panic!("{ev:?}") };
        assert_eq!(
            (items[0].hardware_name.as_str(), items[0].extra_details["Change"].as_str()),
            ("1a86:7523", "Added")
        );
        assert!(hw.poll().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
