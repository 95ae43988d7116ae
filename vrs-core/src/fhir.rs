//! HL7 FHIR R4 interchange: a `Bundle` (type `collection`) of `Patient` and
//! `Immunization` resources, and the reverse (a Bundle's Immunizations read back as
//! dose registrations).
//!
//! Code systems and identifier systems used (documented for receivers):
//! - `urn:jp:vrs:{municipality}:addressee-number` — the municipality's 個別宛名番号;
//! - `urn:jp:vrs:{municipality}:voucher-number` — the voucher (券番号) of the issuing municipality;
//! - `urn:jp:vrs:dose-id` — the dose's id in vrs;
//! - `urn:jp:vrs:site` — the vaccination site (venue code or G-MIS ID);
//! - `urn:jp:vrs:vaccine-product` — the product codes of the vaccine catalogue
//!   (`vrs-core/data/vaccines.json`), beside CVX (`http://hl7.org/fhir/sid/cvx`) where CVX has one;
//! - names: the kanji name and the kana reading as two `HumanName`s, marked with the
//!   `iso21090-EN-representation` extension (`IDE` ideographic, `SYL` syllabic).

use serde_json::{Value, json};

use crate::dose::{DoseRecord, DoseRegistration};
use crate::ids::{DoseId, IdempotencyKey, MunicipalityCode, VoucherNumber, VoucherRef};
use crate::resident::{Resident, Sex};
use crate::vaccine::Catalogue;
use crate::{Error, Result};

/// The product code system of the vaccine catalogue.
pub const PRODUCT_SYSTEM: &str = "urn:jp:vrs:vaccine-product";
/// CVX, the CDC's vaccine code system.
pub const CVX_SYSTEM: &str = "http://hl7.org/fhir/sid/cvx";
/// The identifier system of dose ids.
pub const DOSE_ID_SYSTEM: &str = "urn:jp:vrs:dose-id";
/// The identifier system of vaccination sites.
pub const SITE_SYSTEM: &str = "urn:jp:vrs:site";
const REPRESENTATION: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// The identifier system of a municipality's addressee numbers.
pub fn addressee_system(m: MunicipalityCode) -> String {
    format!("urn:jp:vrs:{m}:addressee-number")
}

/// The identifier system of a municipality's voucher numbers.
pub fn voucher_system(m: MunicipalityCode) -> String {
    format!("urn:jp:vrs:{m}:voucher-number")
}

/// A UUID-shaped URN from 16 bytes, for `fullUrl`s inside a collection Bundle.
fn urn_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("urn:uuid:{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn person_uuid(r: &Resident) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("patient:{}", r.person).as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    urn_uuid(&b)
}

/// The FHIR `Patient` of a resident.
pub fn patient(r: &Resident) -> Value {
    let mut names = vec![json!({
        "use": "official",
        "text": r.name.as_str(),
        "extension": [{"url": REPRESENTATION, "valueCode": "IDE"}],
    })];
    if !r.name_kana.as_str().is_empty() {
        names.push(json!({
            "use": "official",
            "text": r.name_kana.as_str(),
            "extension": [{"url": REPRESENTATION, "valueCode": "SYL"}],
        }));
    }
    let mut p = json!({
        "resourceType": "Patient",
        "id": format!("{}-{}", r.person.municipality, r.person.addressee),
        "identifier": [{"system": addressee_system(r.person.municipality), "value": r.person.addressee.as_str()}],
        "name": names,
        "gender": match r.sex { Sex::Male => "male", Sex::Female => "female", Sex::Unknown => "unknown" },
        "birthDate": r.birth_date.format("%Y-%m-%d").to_string(),
    });
    if let Some(a) = &r.address {
        p["address"] = json!([{"text": a.as_str()}]);
    }
    p
}

/// The FHIR `Immunization` of a dose (its current version; a voided dose is
/// `entered-in-error`). `patient` is the reference to its Patient, or `None` for an
/// unmatched dose, which then refers to its voucher by identifier.
pub fn immunization(d: &DoseRecord, patient: Option<&Resident>, catalogue: &Catalogue) -> Value {
    let det = d.details();
    let product = catalogue.product(det.product.as_str());
    let mut coding = vec![json!({
        "system": PRODUCT_SYSTEM,
        "code": det.product.as_str(),
        "display": product.map_or(det.product.as_str(), |p| p.name.as_str()),
    })];
    if let Some(cvx) = product.and_then(|p| p.cvx) {
        coding.push(json!({"system": CVX_SYSTEM, "code": cvx.to_string()}));
    }
    let patient_ref = match patient {
        Some(r) => json!({"reference": person_uuid(r)}),
        None => json!({"identifier": {"system": voucher_system(d.voucher.municipality), "value": d.voucher.number.as_str()}}),
    };
    json!({
        "resourceType": "Immunization",
        "id": d.id.to_string(),
        "identifier": [
            {"system": DOSE_ID_SYSTEM, "value": d.id.to_string()},
            {"system": voucher_system(d.voucher.municipality), "value": d.voucher.number.as_str()},
        ],
        "status": if d.is_voided() { "entered-in-error" } else { "completed" },
        "vaccineCode": {"coding": coding, "text": product.map_or(det.product.as_str(), |p| p.name.as_str())},
        "patient": patient_ref,
        "occurrenceDateTime": det.date_given.format("%Y-%m-%d").to_string(),
        "recorded": d.registered_at.with_timezone(&crate::clock::jst()).to_rfc3339(),
        "lotNumber": det.lot,
        "manufacturer": {"display": det.maker},
        "location": {"identifier": {"system": SITE_SYSTEM, "value": det.site.as_str()}, "display": det.site_name},
        "performer": [{"actor": {"display": det.doctor}}],
        "protocolApplied": [{"doseNumberPositiveInt": det.dose_number}],
    })
}

/// A collection Bundle of the given residents (with their doses) and unmatched doses.
pub fn bundle(persons: &[(Option<&Resident>, Vec<&DoseRecord>)], catalogue: &Catalogue) -> Value {
    let mut entries = Vec::new();
    for (resident, doses) in persons {
        if let Some(r) = resident {
            entries.push(json!({"fullUrl": person_uuid(r), "resource": patient(r)}));
        }
        for d in doses {
            entries.push(json!({"fullUrl": urn_uuid(d.id.as_bytes()), "resource": immunization(d, *resident, catalogue)}));
        }
    }
    json!({"resourceType": "Bundle", "type": "collection", "entry": entries})
}

/// An `Immunization` read from a Bundle, ready to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImmunization {
    /// The resource id in the Bundle.
    pub resource_id: String,
    /// The dose as a registration (idempotency key `fhir-{id}`, so a re-import stores nothing new).
    pub registration: DoseRegistration,
    /// `true` for `entered-in-error`: the dose is to be voided once registered.
    pub voided: bool,
    /// The site named in `location`, when present.
    pub site: Option<String>,
}

fn bad(path: String, reason: &str) -> Error {
    Error::Invalid { field: "fhir", value: path, reason: reason.to_owned() }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Reads a Bundle's `Immunization` resources as dose registrations. Patients are not
/// needed: a dose belongs to its voucher. Every problem names the entry and field.
pub fn read_bundle(text: &str, catalogue: &Catalogue) -> Result<Vec<ImportedImmunization>> {
    let bundle: Value = serde_json::from_str(text).map_err(|e| bad(format!("line {}", e.line()), &e.to_string()))?;
    if str_at(&bundle, "resourceType") != Some("Bundle") {
        return Err(bad("resourceType".into(), "not a Bundle"));
    }
    let mut out = Vec::new();
    let entries = bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, entry) in entries.iter().enumerate() {
        let Some(res) = entry.get("resource") else { continue };
        if str_at(res, "resourceType") != Some("Immunization") {
            continue;
        }
        let at = |f: &str| format!("entry[{i}].resource.{f}");
        let id = str_at(res, "id").ok_or_else(|| bad(at("id"), "missing"))?.to_owned();
        let voided = match str_at(res, "status") {
            Some("completed") => false,
            Some("entered-in-error") => true,
            Some(_) => return Err(bad(at("status"), "must be completed or entered-in-error")),
            None => return Err(bad(at("status"), "missing")),
        };
        let voucher = res
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|ident| {
                let system = str_at(ident, "system")?;
                let m = system.strip_prefix("urn:jp:vrs:")?.strip_suffix(":voucher-number")?;
                Some((MunicipalityCode::parse(m).ok()?, VoucherNumber::parse(str_at(ident, "value")?).ok()?))
            })
            .map(|(municipality, number)| VoucherRef { municipality, number })
            .ok_or_else(|| bad(at("identifier"), "no voucher identifier (urn:jp:vrs:{municipality}:voucher-number)"))?;
        let dose_number = res
            .pointer("/protocolApplied/0/doseNumberPositiveInt")
            .and_then(Value::as_u64)
            .and_then(|n| u8::try_from(n).ok())
            .filter(|n| (1..=9).contains(n))
            .ok_or_else(|| bad(at("protocolApplied[0].doseNumberPositiveInt"), "missing or not 1-9"))?;
        let date_text = str_at(res, "occurrenceDateTime").ok_or_else(|| bad(at("occurrenceDateTime"), "missing"))?;
        let date_given = date_text
            .get(..10)
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| bad(at("occurrenceDateTime"), "not a date"))?;
        let codings = res.pointer("/vaccineCode/coding").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let product = codings
            .iter()
            .find(|c| str_at(c, "system") == Some(PRODUCT_SYSTEM))
            .and_then(|c| str_at(c, "code"))
            .map(str::to_owned)
            .or_else(|| {
                let cvx: u16 =
                    codings.iter().find(|c| str_at(c, "system") == Some(CVX_SYSTEM)).and_then(|c| str_at(c, "code"))?.parse().ok()?;
                catalogue.products().find(|p| p.cvx == Some(cvx) && p.available_on(date_given)).map(|p| p.code.as_str().to_owned())
            })
            .ok_or_else(|| bad(at("vaccineCode"), "no product code of the catalogue and no known CVX code"))?;
        let lot = str_at(res, "lotNumber").unwrap_or_default().to_owned();
        let doctor = res.pointer("/performer/0/actor/display").and_then(Value::as_str).unwrap_or_default().to_owned();
        let site = res.pointer("/location/identifier/value").and_then(Value::as_str).map(str::to_owned);
        let idempotency_key = IdempotencyKey::parse(&format!("fhir-{id}")).map_err(|_| bad(at("id"), "not a FHIR id"))?;
        out.push(ImportedImmunization {
            resource_id: id,
            registration: DoseRegistration {
                ocr_line: format!("1{dose_number}{}{}", voucher.municipality, voucher.number),
                dose_number: Some(dose_number),
                date_given,
                product,
                lot,
                doctor,
                idempotency_key,
                lot_expiry: None,
            },
            voided,
            site,
        });
    }
    Ok(out)
}

/// The id a dose gets when registered from a Bundle's Immunization `resource_id`.
pub fn imported_dose_id(resource_id: &str) -> Option<DoseId> {
    IdempotencyKey::parse(&format!("fhir-{resource_id}")).ok().map(|k| DoseId::for_key(&k))
}
