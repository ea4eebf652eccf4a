//! Connection slots: how many connections a listener holds at once, in all and per remote address, so
//! that one address (or a flood of idle sockets) cannot take every slot. Used by the RTMP and HTTP
//! accept loops; a slot is given back when its [`Slot`] drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is taken.
    All,
    /// This address holds its share.
    Address,
}

#[derive(Debug)]
pub struct Slots {
    all: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_ip_max: usize,
    /// For logs: the limits as configured.
    pub max: usize,
}

/// One connection's slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(max: usize, per_ip_max: usize) -> Arc<Slots> {
        Arc::new(Slots { all: Arc::new(Semaphore::new(max)), per_ip: Mutex::default(), per_ip_max, max })
    }

    pub fn per_ip_max(&self) -> usize {
        self.per_ip_max
    }

    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let permit = Arc::clone(&self.all).try_acquire_owned().map_err(|_| Full::All)?;
        // Single increments and decrements: a panic while holding it leaves the map consistent.
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return Err(Full::Address);
        }
        *n += 1;
        Ok(Slot { _permit: permit, ip, slots: Arc::clone(self) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_in_all_and_per_address_and_given_back() {
        let slots = Slots::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).unwrap_err(), Full::Address);
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).unwrap_err(), Full::All);
        drop(a1);
        let _b2 = slots.take(b).expect("a slot given back is free again");
        assert!(slots.per_ip.lock().unwrap().len() <= 2, "addresses without connections are forgotten");
    }
}
