#![allow(clippy::unwrap_used)]

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: u64 = 1_700_000_000;
const RAND: [u8; NONCE_RANDOM_LEN] = [7; NONCE_RANDOM_LEN];

// RFC 2617 §3.5. Vector checked against python3 hashlib and several independent
// implementations' test suites.
const RFC2617_AUTH: &str = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

// RFC 7616 §3.9.1 (password "Circle of Life", lowercase "of", see erratum 4495).
const R7616_REALM: &str = "http-auth@example.org";
const R7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const R7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
const R7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const R7616_SHA256: &str = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
const R7616_MD5: &str = "8ca523f5e9506fed4657c9700eebdbec";

fn rfc7616_answer(alg: Algorithm) -> Authorization {
    let ch = Challenge::parse(&format!(
        r#"Digest realm="{R7616_REALM}", qop="auth, auth-int", algorithm={alg}, nonce="{R7616_NONCE}", opaque="{R7616_OPAQUE}""#
    ))
    .unwrap();
    ch.answer(&AnswerInput {
        username: "Mufasa",
        secret: ClientSecret::Password("Circle of Life"),
        method: "GET",
        uri: "/dir/index.html",
        cnonce: R7616_CNONCE,
        nc: 1,
    })
    .unwrap()
}

#[test]
fn rfc2617_vector_parses_and_recomputes() {
    let a = Authorization::parse(RFC2617_AUTH).unwrap();
    assert_eq!(a.username, "Mufasa");
    assert_eq!(a.realm, "testrealm@host.com");
    assert_eq!(a.algorithm, Algorithm::Md5);
    let q = a.qop.as_ref().unwrap();
    assert_eq!((q.qop, q.nc, q.cnonce.as_str()), (Qop::Auth, 1, "0a4f113b"));
    assert_eq!(
        a.opaque.as_deref(),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );

    let ha1 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    let got = digest::request_digest(
        Algorithm::Md5,
        &ha1,
        "GET",
        &a.uri,
        &a.nonce,
        Some(&digest::QopInput {
            nc: &q.nc_text,
            cnonce: &q.cnonce,
        }),
    );
    assert_eq!(got, a.response);
}

#[test]
fn rfc7616_vectors_sha256_and_md5() {
    let a = rfc7616_answer(Algorithm::Sha256);
    assert_eq!(a.response, R7616_SHA256);
    assert_eq!(a.opaque.as_deref(), Some(R7616_OPAQUE));
    assert_eq!(rfc7616_answer(Algorithm::Md5).response, R7616_MD5);
    // The same through a stored HA1 instead of the password.
    let h = ha1(Algorithm::Sha256, "Mufasa", R7616_REALM, "Circle of Life");
    assert_eq!(
        h,
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    );
}

#[test]
fn authorization_display_round_trips() {
    let a = rfc7616_answer(Algorithm::Sha256);
    let s = a.to_string();
    assert!(s.starts_with("Digest username=\"Mufasa\""), "{s}");
    assert!(s.contains("qop=auth, nc=00000001"), "{s}");
    assert_eq!(Authorization::parse(&s).unwrap(), a);
}

#[test]
fn parser_is_liberal_in_layout() {
    let v = "  dIgEsT\tUSERNAME = \"a\\\"b\\\\c\" ,REALM=\"r\",, nonce=n1 ,\r\n uri=\"sip:x@y;transport=tcp\",\
             Response=\"0123456789abcdef0123456789ABCDEF\" , algorithm=\"md5\", qop=\"auth\", \
             nc=0000000A, cnonce=cn, foo=\"bar,baz\", userhash=false";
    let a = Authorization::parse(v).unwrap();
    assert_eq!(a.username, "a\"b\\c");
    assert_eq!(a.nonce, "n1");
    assert_eq!(a.uri, "sip:x@y;transport=tcp");
    let q = a.qop.unwrap();
    assert_eq!((q.nc, q.nc_text.as_str()), (10, "0000000A"));
}

#[test]
fn parser_errors_are_precise() {
    let ok = r#"Digest username="u", realm="r", nonce="n", uri="sip:r", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="c""#;
    assert!(Authorization::parse(ok).is_ok());
    let cases: &[(&str, SyntaxError)] = &[
        ("", SyntaxError::NotDigest),
        ("Basic dXNlcjpwYXNz", SyntaxError::NotDigest),
        ("Digestive username=\"u\"", SyntaxError::NotDigest),
        (
            "Digest username=\"u\", username=\"v\"",
            SyntaxError::DuplicateParam(Param::Username),
        ),
        (
            "Digest username=\"u\", USERNAME=\"v\"",
            SyntaxError::DuplicateParam(Param::Username),
        ),
        (
            "Digest username=\"u",
            SyntaxError::UnterminatedQuote { offset: 16 },
        ),
        (
            "Digest username=\"u\\",
            SyntaxError::UnterminatedQuote { offset: 16 },
        ),
        (
            "Digest username",
            SyntaxError::Expected {
                expected: "'='",
                offset: 15,
            },
        ),
        (
            "Digest username=",
            SyntaxError::Expected {
                expected: "parameter value",
                offset: 16,
            },
        ),
        (
            "Digest a=1 b=2",
            SyntaxError::Expected {
                expected: "','",
                offset: 11,
            },
        ),
        (
            "Digest,a=1",
            SyntaxError::Expected {
                expected: "whitespace after Digest",
                offset: 6,
            },
        ),
        (
            "Digest =1",
            SyntaxError::Expected {
                expected: "parameter name",
                offset: 7,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&Authorization::parse(input).unwrap_err(), want, "{input:?}");
    }
    let missing = |drop: &str| {
        let v: Vec<&str> = ok
            .trim_start_matches("Digest ")
            .split(", ")
            .filter(|p| !p.starts_with(drop))
            .collect();
        Authorization::parse(&format!("Digest {}", v.join(", "))).unwrap_err()
    };
    assert_eq!(
        missing("username="),
        SyntaxError::MissingParam(Param::Username)
    );
    assert_eq!(missing("realm="), SyntaxError::MissingParam(Param::Realm));
    assert_eq!(missing("nonce="), SyntaxError::MissingParam(Param::Nonce));
    assert_eq!(missing("uri="), SyntaxError::MissingParam(Param::Uri));
    assert_eq!(
        missing("response="),
        SyntaxError::MissingParam(Param::Response)
    );
    assert_eq!(missing("cnonce="), SyntaxError::MissingParam(Param::Cnonce));
    assert_eq!(missing("nc="), SyntaxError::MissingParam(Param::Nc));
    // qop absent: parses (RFC 2069 form), the verifier then refuses it.
    assert!(Authorization::parse(&ok.replace(", qop=auth", ""))
        .unwrap()
        .qop
        .is_none());
    let sub = |from: &str, to: &str| Authorization::parse(&ok.replace(from, to)).unwrap_err();
    assert_eq!(sub("nc=00000001", "nc=1"), SyntaxError::BadValue(Param::Nc));
    assert_eq!(
        sub("nc=00000001", "nc=0000000g"),
        SyntaxError::BadValue(Param::Nc)
    );
    assert_eq!(
        sub("0123456789abcdef\"", "0123456789abcdex\""),
        SyntaxError::BadValue(Param::Response)
    );
    // A 32-hex response with algorithm SHA-256 is the wrong length.
    assert_eq!(
        sub("qop=auth", "qop=auth, algorithm=SHA-256"),
        SyntaxError::BadValue(Param::Response)
    );
    assert_eq!(
        sub("qop=auth", "qop=auth, algorithm=SHA-512-256"),
        SyntaxError::UnsupportedAlgorithm
    );
    assert_eq!(sub("qop=auth,", "qop=token,"), SyntaxError::UnsupportedQop);
}

#[test]
fn challenge_parse_and_display() {
    let c = Challenge::parse(
        r#"DIGEST realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5"#,
    )
    .unwrap();
    assert_eq!(c.realm, "atlanta.com");
    assert_eq!(c.qop, vec![Qop::Auth, Qop::AuthInt]);
    assert_eq!(c.opaque.as_deref(), Some(""));
    assert!(!c.stale);
    assert_eq!(Challenge::parse(&c.to_string()).unwrap(), c);

    let built = Challenge::new("voxgate", "abc", Algorithm::Sha256)
        .with_opaque("o\"p")
        .with_stale(true);
    assert_eq!(
        built.to_string(),
        r#"Digest realm="voxgate", nonce="abc", opaque="o\"p", algorithm=SHA-256, qop="auth", stale=true"#
    );
    assert_eq!(Challenge::parse(&built.to_string()).unwrap(), built);

    // No qop, no algorithm: RFC 2069-style MD5 challenge from an old carrier.
    let old = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
    assert!(old.qop.is_empty());
    assert_eq!(old.algorithm, Algorithm::Md5);
    assert_eq!(
        Challenge::parse(r#"Digest nonce="n""#).unwrap_err(),
        SyntaxError::MissingParam(Param::Realm)
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-conf""#).unwrap_err(),
        SyntaxError::UnsupportedQop
    );
}

#[test]
fn header_injection_is_impossible_through_quoted_values() {
    let c = Challenge::new("r", "n", Algorithm::Md5).with_opaque("x\r\nVia: evil");
    let s = c.to_string();
    assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
}

#[test]
fn select_challenge_takes_the_first_supported() {
    let sha = r#"Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth""#;
    let md5 = r#"Digest realm="r", nonce="n", algorithm=MD5, qop="auth""#;
    let weird = r#"Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth""#;
    let int_only = r#"Digest realm="r", nonce="n", qop="auth-int""#;
    assert_eq!(
        select_challenge([sha, md5]).unwrap().algorithm,
        Algorithm::Sha256
    );
    assert_eq!(
        select_challenge([md5, sha]).unwrap().algorithm,
        Algorithm::Md5
    );
    assert_eq!(
        select_challenge(["Basic realm=\"r\"", weird, int_only, md5])
            .unwrap()
            .algorithm,
        Algorithm::Md5
    );
    assert!(select_challenge([weird, int_only, "garbage"]).is_none());
}

#[test]
fn client_answers_without_qop_and_refuses_auth_int() {
    let old = Challenge::parse(
        r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#,
    )
    .unwrap();
    let input = AnswerInput {
        username: "Mufasa",
        secret: ClientSecret::Password("Circle Of Life"),
        method: "GET",
        uri: "/dir/index.html",
        cnonce: "ignored",
        nc: 1,
    };
    let a = old.answer(&input).unwrap();
    assert!(a.qop.is_none());
    // RFC 2069 form: H(HA1:nonce:HA2), computed independently with python3 hashlib.
    assert_eq!(a.response, "670fd8c2df070c60b045671b8b24ff02");
    assert!(!a.to_string().contains("cnonce"));

    let int_only = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#).unwrap();
    assert_eq!(
        int_only.answer(&input).unwrap_err(),
        AuthError::QopNotSupported
    );
}

fn verifier() -> Verifier {
    Verifier::new("voxgate.test", Nonces::new(SECRET))
}

fn users(user: &str, alg: Algorithm) -> Option<String> {
    (user == "alice").then(|| ha1(alg, "alice", "voxgate.test", "s3cret"))
}

/// Client side of a round trip: answer the `index`th challenge.
fn client_auth(
    challenges: &[Challenge],
    index: usize,
    user: &str,
    password: &str,
    nc: u32,
) -> String {
    let wire: Vec<String> = challenges.iter().map(ToString::to_string).collect();
    let ch = Challenge::parse(&wire[index]).unwrap();
    ch.answer(&AnswerInput {
        username: user,
        secret: ClientSecret::Password(password),
        method: "REGISTER",
        uri: "sip:voxgate.test",
        cnonce: "0a4f113b",
        nc,
    })
    .unwrap()
    .to_string()
}

#[test]
fn challenges_are_sha256_then_md5_with_one_nonce() {
    let v = verifier().with_opaque("op");
    let cs = v.challenges(T0, RAND, false);
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].algorithm, Algorithm::Sha256);
    assert_eq!(cs[1].algorithm, Algorithm::Md5);
    assert_eq!(cs[0].nonce, cs[1].nonce);
    assert!(cs.iter().all(|c| c.qop == [Qop::Auth] && !c.stale));
    assert!(cs[0].to_string().contains("opaque=\"op\""));
    assert!(v.challenges(T0, RAND, true).iter().all(|c| c.stale));
}

#[test]
fn round_trip_both_algorithms() {
    for (i, alg) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
        let mut v = verifier().with_opaque("op");
        let cs = v.challenges(T0, RAND, false);
        let hdr = client_auth(&cs, i, "alice", "s3cret", 1);
        let ok = v.verify("REGISTER", &hdr, users, T0 + 10).unwrap();
        assert_eq!(
            ok,
            Verified {
                username: "alice".into(),
                uri: "sip:voxgate.test".into(),
                algorithm: alg,
            }
        );
    }
}

#[test]
fn session_algorithms_round_trip_when_offered() {
    let mut v = verifier().with_algorithms(vec![Algorithm::Sha256Sess, Algorithm::Md5Sess]);
    let cs = v.challenges(T0, RAND, false);
    for i in 0..2 {
        let hdr = client_auth(&cs, i, "alice", "s3cret", 1 + i as u32);
        v.verify("REGISTER", &hdr, users, T0).unwrap();
    }
    // Not offered by default.
    let mut d = verifier();
    assert_eq!(
        d.verify(
            "REGISTER",
            &client_auth(&cs, 0, "alice", "s3cret", 1),
            users,
            T0
        ),
        Err(AuthError::AlgorithmNotOffered(Algorithm::Sha256Sess))
    );
}

#[test]
fn wrong_password_and_unknown_user_are_the_same_error() {
    let mut v = verifier();
    let cs = v.challenges(T0, RAND, false);
    let wrong = client_auth(&cs, 0, "alice", "guess", 1);
    let unknown = client_auth(&cs, 0, "mallory", "s3cret", 1);
    assert_eq!(
        v.verify("REGISTER", &wrong, users, T0),
        Err(AuthError::Forbidden)
    );
    assert_eq!(
        v.verify("REGISTER", &unknown, users, T0),
        Err(AuthError::Forbidden)
    );
    // The method is signed too.
    let good = client_auth(&cs, 0, "alice", "s3cret", 1);
    assert_eq!(
        v.verify("INVITE", &good, users, T0),
        Err(AuthError::Forbidden)
    );
    // Failed attempts record nothing: the right answer still works afterwards.
    assert!(v.verify("REGISTER", &good, users, T0).is_ok());
}

#[test]
fn stale_only_with_right_digest_invalid_for_forgeries() {
    let mut v = verifier();
    let cs = v.challenges(T0, RAND, false);
    let good = client_auth(&cs, 0, "alice", "s3cret", 1);
    let later = T0 + Nonces::DEFAULT_LIFETIME;
    assert_eq!(
        v.verify("REGISTER", &good, users, later),
        Err(AuthError::Stale)
    );
    let wrong = client_auth(&cs, 0, "alice", "guess", 1);
    assert_eq!(
        v.verify("REGISTER", &wrong, users, later),
        Err(AuthError::Forbidden)
    );
    let unknown = client_auth(&cs, 0, "bob", "s3cret", 1);
    assert_eq!(
        v.verify("REGISTER", &unknown, users, later),
        Err(AuthError::Forbidden)
    );

    // Another server's nonce: invalid, not stale.
    let other = Verifier::new("voxgate.test", Nonces::new(b"another secret"));
    let foreign = client_auth(&other.challenges(T0, RAND, false), 0, "alice", "s3cret", 1);
    assert_eq!(
        v.verify("REGISTER", &foreign, users, T0),
        Err(AuthError::NonceInvalid)
    );
}

#[test]
fn nonce_check_distinguishes_stale_invalid_future() {
    let n = Nonces::new(SECRET).with_lifetime(60);
    let nonce = n.issue(T0, RAND);
    assert_eq!(nonce.len(), 64);
    assert_eq!(
        n.check(&nonce, T0 + 59),
        Ok(NonceInfo {
            issued_at: T0,
            expires_at: T0 + 60
        })
    );
    assert_eq!(n.check(&nonce, T0 + 60), Err(AuthError::Stale));
    // Clock stepped back a little: still fine; far in the future: not ours.
    assert!(n.check(&nonce, T0 - 30).is_ok());
    assert_eq!(n.check(&nonce, T0 - 61), Err(AuthError::NonceInvalid));
    // Every single-character corruption is caught by the MAC or the decoding.
    for i in 0..nonce.len() {
        let mut b = nonce.clone().into_bytes();
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(b).unwrap();
        assert_eq!(n.check(&bad, T0), Err(AuthError::NonceInvalid), "pos {i}");
    }
    for bad in [
        "",
        "zz",
        &nonce[..62],
        &format!("{nonce}00"),
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    ] {
        assert_eq!(n.check(bad, T0), Err(AuthError::NonceInvalid), "{bad}");
    }
    assert_ne!(n.issue(T0, RAND), n.issue(T0, [8; NONCE_RANDOM_LEN]));
    assert!(format!("{n:?}").contains("lifetime"));
}

#[test]
fn nc_replay_is_rejected() {
    let mut v = verifier();
    let cs = v.challenges(T0, RAND, false);
    let one = client_auth(&cs, 0, "alice", "s3cret", 1);
    assert!(v.verify("REGISTER", &one, users, T0).is_ok());
    assert_eq!(
        v.verify("REGISTER", &one, users, T0 + 1),
        Err(AuthError::Replay)
    );
    let three = client_auth(&cs, 0, "alice", "s3cret", 3);
    assert!(v.verify("REGISTER", &three, users, T0 + 2).is_ok());
    let two = client_auth(&cs, 1, "alice", "s3cret", 2);
    assert_eq!(
        v.verify("REGISTER", &two, users, T0 + 3),
        Err(AuthError::Replay)
    );
    let zero = client_auth(&cs, 0, "alice", "s3cret", 0);
    let mut fresh = verifier();
    assert_eq!(
        fresh.verify("REGISTER", &zero, users, T0),
        Err(AuthError::Replay)
    );
}

#[test]
fn policy_errors() {
    let mut v = verifier().with_opaque("op");
    let cs = v.challenges(T0, RAND, false);
    let good = client_auth(&cs, 0, "alice", "s3cret", 1);

    let other_realm = good.replace("realm=\"voxgate.test\"", "realm=\"elsewhere\"");
    assert_eq!(
        v.verify("REGISTER", &other_realm, users, T0),
        Err(AuthError::RealmMismatch)
    );
    let no_opaque = good.replace(", opaque=\"op\"", "");
    assert_eq!(
        v.verify("REGISTER", &no_opaque, users, T0),
        Err(AuthError::OpaqueMismatch)
    );
    let bad_opaque = good.replace("opaque=\"op\"", "opaque=\"xx\"");
    assert_eq!(
        v.verify("REGISTER", &bad_opaque, users, T0),
        Err(AuthError::OpaqueMismatch)
    );
    let no_qop = good.replace(", qop=auth, nc=00000001", "");
    assert_eq!(
        v.verify("REGISTER", &no_qop, users, T0),
        Err(AuthError::QopRequired)
    );
    let auth_int = good.replace("qop=auth,", "qop=auth-int,");
    assert_eq!(
        v.verify("REGISTER", &auth_int, users, T0),
        Err(AuthError::QopNotSupported)
    );
    assert_eq!(
        v.verify("REGISTER", "Basic Zm9vOmJhcg==", users, T0),
        Err(AuthError::Malformed(SyntaxError::NotDigest))
    );
    let md5_only = &mut verifier().with_algorithms(vec![Algorithm::Md5]);
    assert_eq!(
        md5_only.verify("REGISTER", &good, users, T0),
        Err(AuthError::AlgorithmNotOffered(Algorithm::Sha256))
    );
    assert!(v.verify("REGISTER", &good, users, T0).is_ok());
}

#[test]
fn tracker_is_bounded_and_eviction_never_allows_replay() {
    let mut t = NcTracker::new(3);
    for i in 0..3u64 {
        t.check_and_record(&format!("n{i}"), 1, T0 + 100 + i, T0)
            .unwrap();
    }
    assert_eq!(t.len(), 3);
    // A fourth nonce evicts the soonest-expiring one (n0).
    t.check_and_record("n3", 1, T0 + 200, T0).unwrap();
    assert_eq!(t.len(), 3);
    // n0's history is gone: it is refused as stale, not trusted again.
    assert_eq!(
        t.check_and_record("n0", 2, T0 + 100, T0),
        Err(AuthError::Stale)
    );
    // Survivors keep their history.
    assert_eq!(
        t.check_and_record("n1", 1, T0 + 101, T0),
        Err(AuthError::Replay)
    );
    t.check_and_record("n1", 2, T0 + 101, T0).unwrap();
    // Expiry empties it.
    t.purge(T0 + 200);
    assert!(t.is_empty());

    // A flood of distinct nonces never grows past the cap.
    let mut t = NcTracker::new(100);
    for i in 0..10_000u64 {
        t.check_and_record(&format!("{i:064x}"), 1, T0 + 300 + i / 10, T0 + i / 10)
            .unwrap();
        assert!(t.len() <= 100);
    }
}

#[test]
fn verifier_tracker_cap_applies() {
    let mut v = verifier().with_nc_tracker(NcTracker::new(2));
    for s in 0..5u8 {
        let cs = v.challenges(T0 + u64::from(s), [s; NONCE_RANDOM_LEN], false);
        let hdr = client_auth(&cs, 0, "alice", "s3cret", 1);
        v.verify("REGISTER", &hdr, users, T0 + 5).unwrap();
        assert!(v.nc_tracker().len() <= 2);
    }
}

/// Deterministic xorshift so this "fuzz" test is reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_never_panics() {
    let pieces = [
        "Digest",
        " ",
        ",",
        "=",
        "\"",
        "\\",
        "\r\n",
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "opaque",
        "stale",
        "auth",
        "MD5",
        "SHA-256-sess",
        "00000001",
        "é",
        "\u{0}",
        "\"voxgate.test\"",
        "ffffffff",
        "x",
    ];
    let mut v = verifier();
    let mut s = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..20_000 {
        let n = (xorshift(&mut s) % 24) as usize;
        let mut input = String::new();
        for _ in 0..n {
            input.push_str(pieces[(xorshift(&mut s) % pieces.len() as u64) as usize]);
        }
        let _ = Authorization::parse(&input);
        let _ = Challenge::parse(&input);
        let _ = v.verify("REGISTER", &input, users, T0);
        let _ = v.nonces().check(&input, T0);
    }
    // Valid header, every truncation.
    let cs = v.challenges(T0, RAND, false);
    let good = client_auth(&cs, 0, "alice", "s3cret", 1);
    for (i, _) in good.char_indices() {
        let _ = v.verify("REGISTER", &good[..i], users, T0);
    }
}
