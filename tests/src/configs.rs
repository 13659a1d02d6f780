//! Configurations the end-to-end tests start chipcardd with.

/// One emulated driver with two readers: "Emul Reader 0" (KEYPAD) holding a card with PIN
/// 1234, and "Emul Reader 1" (no flags) empty; a control socket at `{control}`.
pub const EMUL_TWO_READERS: &str = r#"
server {
  socket="{socket}"
}
driver {
  type="emul"
  name="emul"
  controlSocket="{control}"
  vars {
    vendor="chipcard tests"
  }
  reader {
    name="Emul Reader 0"
    flags="KEYPAD"
    slots="1"
    card {
      slot="0"
      atr="3B8880010000000000000000"
      pin="1234"
    }
  }
  reader {
    name="Emul Reader 1"
    slots="1"
  }
}
"#;

/// An ATR used by tests that insert cards (a generic T=1 processor card).
pub const TEST_ATR: &str = "3B8880010000000000000000";

/// The ATR of a ddv0 banking card, for card-type tests.
pub const DDV0_ATR: &str = "3BEF00FF8131FE4565630D02310250001090";

/// [`EMUL_TWO_READERS`] plus services: `cardinfo` (started on demand, idle timeout
/// `{idle}` ms, ATR list `{list}`), `cardinfo-auto` (`autoload`, same list) and
/// `cardinfo-nolist` (a list path that does not exist). Restarts are quick (100 ms).
/// Replace `{list}` and `{idle}` before starting the server.
pub const EMUL_WITH_SERVICES: &str = r#"
server {
  socket="{socket}"
  restartBackoff="100"
  restartBackoffMax="400"
}
driver {
  type="emul"
  name="emul"
  controlSocket="{control}"
  reader {
    name="Emul Reader 0"
    flags="KEYPAD"
    card {
      slot="0"
      atr="3B8880010000000000000000"
      pin="1234"
    }
  }
  reader {
    name="Emul Reader 1"
  }
}
service {
  type="cardinfo"
  name="cardinfo"
  idleTimeout="{idle}"
  atrList="{list}"
}
service {
  type="cardinfo"
  name="cardinfo-auto"
  flags="autoload"
  atrList="{list}"
}
service {
  type="cardinfo"
  name="cardinfo-nolist"
  atrList="{dir}/no-such-list.txt"
}
"#;

/// The ATR list fixture (a few entries in pcsc-tools' format).
pub fn atr_list_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smartcard_list.txt")
}

/// A T=1 card with a correct TCK (a German eGK), for the cardinfo tests.
pub const EGK_ATR: &str = "3BDD97FF81B1FE451F03006404050803739621D0009000C8";
