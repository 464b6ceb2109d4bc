//! User names over real sockets: normalised, without invisible or
//! direction-changing characters, and unique by how they look.

mod util;

use courier::client::Client;
use courier::codec::proto::ErrorCode;
use util::*;

#[test]
fn look_alike_and_invisible_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["alice"]);
    let mut client = Client::connect(address).unwrap();
    // Each case: a name to register, and the error it gets.
    let cases = [
        ("Alice", ErrorCode::UserExists),
        ("\u{0430}lice", ErrorCode::UserExists), // Cyrillic а
        ("alice\u{200b}", ErrorCode::MalformedFrame), // zero-width space
        ("\u{202e}ecila", ErrorCode::MalformedFrame), // right-to-left override
        ("ａｌｉｃｅ", ErrorCode::MalformedFrame), // full width: not NFKC
    ];
    for (name, code) in cases {
        expect_code(client.register(name, "pw"), code);
    }
    // A name that only shares letters is fine, and logs in as spelled.
    client.register("alicia", "pw").unwrap();
    expect_code(
        client.login("Alicia", "pw", "phone", Default::default()),
        ErrorCode::BadCredentials,
    );
    client
        .login("alicia", "pw", "phone", Default::default())
        .unwrap();
}
