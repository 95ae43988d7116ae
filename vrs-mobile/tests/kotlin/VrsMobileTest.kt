// The Kotlin test program of vrs-mobile: compiled by kotlinc-jvm against the generated
// bindings (package jp.vrs.mobile) and run on the JVM with JNA against the built library.
// scripts/kotlin-test builds, generates, compiles and runs it.
//
// Usage: VrsMobileTestKt <vrs binary> <vaccines.json> <work dir>
//        VrsMobileTestKt crash-child <data dir> <batch out file>   (started by the test itself)

import jp.vrs.mobile.*
import kotlinx.coroutines.runBlocking
import java.io.File
import java.time.LocalDate
import java.time.ZoneId
import java.util.concurrent.TimeUnit

var passed = 0
var failed = 0

fun check(name: String, ok: Boolean, detail: () -> String = { "" }) {
    if (ok) {
        passed++
    } else {
        failed++
        println("FAIL $name ${detail()}")
    }
}

inline fun <reified T : Throwable> expectThrows(name: String, block: () -> Unit): T? {
    try {
        block()
    } catch (e: Throwable) {
        if (e is T) {
            passed++
            return e
        }
        failed++
        println("FAIL $name: expected ${T::class.simpleName}, got $e")
        return null
    }
    failed++
    println("FAIL $name: expected ${T::class.simpleName}, nothing thrown")
    return null
}

val ACCOUNT = SiteAccount(accountId = "tab-1", siteId = "venue-1", siteName = "区民会館", municipalityCode = "131016")
val TODAY: String = LocalDate.now(ZoneId.of("Asia/Tokyo")).toString()
val PFIZER_GTIN = "09520000000011" // GS1 prefix 952 is reserved for examples: not a real product

fun registration(voucher: String, expiry: String? = null, date: String = TODAY) = RegistrationInput(
    ocrLine = "11131016$voucher",
    doseNumber = null,
    dateGiven = date,
    product = "pfizer",
    lot = "FA5765",
    lotExpiry = expiry,
    doctor = "佐藤一郎",
    idempotencyKey = null,
)

/** The tablet account's secret, printed once by `vrs accounts issue`; `sync apply` signs in with it. */
var accountSecret: String? = null

/** Runs the vrs command; returns stdout, failing the test on a non-zero exit. */
fun vrs(bin: String, vararg args: String): String {
    val pb = ProcessBuilder(listOf(bin) + args.toList()).redirectError(ProcessBuilder.Redirect.INHERIT)
    accountSecret?.let { pb.environment()["VRS_ACCOUNT_SECRET"] = it }
    val p = pb.start()
    val out = p.inputStream.bufferedReader().readText()
    check("vrs ${args.joinToString(" ")} exits 0", p.waitFor() == 0) { out }
    return out
}

fun entryIds(batchJson: String): List<String> =
    Regex("\"entry_id\":\"([^\"]+)\"").findAll(batchJson).map { it.groupValues[1] }.toList()

fun statuses(replyJson: String): List<String> =
    Regex("\"status\":\\s*\"([a-z]+)\"").findAll(replyJson).map { it.groupValues[1] }.toList()

fun parsers() {
    val clean = parseVoucher("11 131016 0000012345")
    check("clean line", clean.ocrLine == "111310160000012345" && clean.municipality.name == "千代田区")
    check("clean line is probable", clean.confidence == Confidence.PROBABLE) { clean.toString() }
    check("dose number", clean.doseNumber == 1.toUByte())

    val noisy = parseVoucher("１１ １３１０１６\n0000O12345")
    check("full-width, wrapped, O for 0", noisy.ocrLine == "111310160000012345") { noisy.toString() }
    check("letter fix reported", noisy.letterFixes.size == 1 && noisy.letterFixes[0].read == "O")
    check("fixed line is doubtful", noisy.confidence == Confidence.DOUBTFUL)

    val repaired = parseVoucher("11 131816 0000012345")
    check("municipality repaired", repaired.municipality.code == "131016" && repaired.repair?.read == 8.toUByte()) { repaired.toString() }

    expectThrows<VrsException.NothingRead>("nothing read") { parseVoucher("接種券") }
    val barcode = expectThrows<VrsException.BarcodeOnly>("barcode alone") { parseVoucher("A0000012345B") }
    check("barcode digits", barcode?.voucherNumber == "0000012345")
    val short = expectThrows<VrsException.WrongDigitCount>("17 digits") { parseVoucher("11131016000001234") }
    check("digits counted", short?.found == 17.toUInt())
    expectThrows<VrsException.SeveralVouchers>("two vouchers") { parseVoucher("111310160000012345\n111310160000099999") }
    val bad = expectThrows<VrsException.BadMunicipalityCode>("bad check digit") { parseVoucher("11 999999 0000012345") }
    check("bad code read", bad?.read == "999999")
    expectThrows<VrsException.UnknownMunicipality>("unknown municipality") { parseVoucher("11 100013 0000012345") }

    val agree = confirmVoucher("11 131016 0000012345", "A0000012345B")
    check("barcode agrees", agree.agreement == Agreement.AGREE && agree.confidence == Confidence.CONFIRMED) { agree.toString() }
    val qr = confirmVoucher("11 131016 0000012345", "111310160000012345")
    check("QR agrees", qr.agreement == Agreement.AGREE && qr.secondSource == SecondSource.QR_CODE)
    val disagree = confirmVoucher("11 131016 0000012345", "0000072345")
    check("barcode disagrees", disagree.agreement == Agreement.DISAGREE && disagree.confidence == Confidence.CONTRADICTED)
    check("mismatch position", disagree.mismatches == listOf(14u)) { disagree.mismatches.toString() }
    val one = confirmVoucher("11 131016 0000012345")
    check("only one reading", one.agreement == Agreement.ONLY_ONE_READING && one.confidence != Confidence.CONFIRMED)

    val sticker = parseVaccineLabel("コミナティ筋注 ロット番号：FA5765 有効期限 2021.06.30", "2021-07-01")
    check("sticker label", sticker.source == LabelSource.TEXT && sticker.product == "pfizer" && sticker.lot == "FA5765") { sticker.toString() }
    check("expired lot is a finding", sticker.findings.map { it.kind } == listOf("expired_lot") && sticker.findings[0].severity == Severity.MUST_FIX)
    expectThrows<VrsException.NoLot>("no lot") { parseVaccineLabel("コミナティ筋注") }
    expectThrows<VrsException.BadGtin>("bad GTIN") { parseVaccineLabel("(01)09520000000012(10)FA5765") }
    expectThrows<VrsException.MalformedLabel>("malformed GS1") { parseVaccineLabel("(01)$PFIZER_GTIN(99)X(10)FA5765") }
    expectThrows<VrsException.BadExpiry>("bad expiry") { parseVaccineLabel("ロット FA5765 有効期限 いつか") }
}

fun catalogueWithGtins(vaccinesJson: String): String =
    File(vaccinesJson).readText().replaceFirst("\"code\": \"pfizer\",", "\"code\": \"pfizer\", \"gtins\": [\"$PFIZER_GTIN\"],")

/** The child: registers two doses, produces a batch, writes it, and dies without a word. */
fun crashChild(dataDir: String, out: String) = runBlocking {
    val s = openTabletSession(dataDir, ACCOUNT)
    s.register(registration("0000000021"))
    s.register(registration("0000000022"))
    val batch = s.pendingBatch(100u)!!
    File(out).writeText(batch.json)
    Runtime.getRuntime().halt(3) // no shutdown hooks, no destructors: a crash
}

fun session(bin: String, vaccinesJson: String, work: File) = runBlocking {
    val server = File(work, "server.redb").path
    val issued = vrs(bin, "--store", server, "--json", "accounts", "issue", "--municipality", "131016", "--account", "tab-1",
        "--site-id", "venue-1", "--site-name", "区民会館")
    accountSecret = Regex("\"secret\":\\s*\"([0-9a-f]+)\"").find(issued)?.groupValues?.get(1)
    check("account issued with a secret", accountSecret != null) { issued }

    val dir = File(work, "tablet").path
    val s = openTabletSession(dir, ACCOUNT, catalogueWithGtins(vaccinesJson))
    check("account", s.account() == ACCOUNT)

    // A GS1 DataMatrix payload read with the session's catalogue.
    val gs1 = s.parseVaccineLabel("]d201${PFIZER_GTIN}17991231 10FA5765\u001d21SN0001".replace(" ", ""), TODAY)
    check("GS1 label", gs1.source == LabelSource.GS1 && gs1.product == "pfizer" && gs1.serial == "SN0001" && gs1.expiry == "2099-12-31") { gs1.toString() }

    // Offline registrations, with the core's findings.
    val a = s.register(registration("0000000001"))
    check("registered offline", !a.replayed && a.dose.version == 1u && !a.dose.synced)
    check("unmatched offline", a.dose.findings.map { it.kind } == listOf("unmatched")) { a.dose.findings.toString() }
    val b = s.register(registration("0000000002", expiry = "2021-01-31"))
    check("expired lot stored as a finding", b.dose.findings.any { it.kind == "expired_lot" && it.severity == Severity.MUST_FIX }) { b.dose.findings.toString() }
    val c = s.register(registration("0000000003"))
    val replay = s.register(registration("0000000001").copy(idempotencyKey = a.dose.idempotencyKey))
    check("same key replays", replay.replayed && replay.dose.doseId == a.dose.doseId)
    val rejected = expectThrows<VrsException.Rejected>("future date rejected") {
        runBlocking { s.register(registration("0000000004", date = LocalDate.parse(TODAY).plusDays(1).toString())) }
    }
    check("rejection names its finding", rejected?.finding == "future_date")
    expectThrows<VrsException.InvalidInput>("bad date") { runBlocking { s.register(registration("0000000004", date = "1st July")) } }

    // Today's list and a correction.
    val today = s.today()
    check("today lists three", today.size == 3) { today.toString() }
    val fixed = s.correct(c.dose.doseId, CorrectionInput(null, null, null, "FA5766", null, null, null), "lot misread")
    check("corrected", fixed.version == 2u && fixed.lot == "FA5766") { fixed.toString() }
    expectThrows<VrsException.NotFound>("unknown dose") {
        runBlocking { s.correct("00".repeat(16), CorrectionInput(null, null, null, "X", null, null, null), "x") }
    }
    expectThrows<VrsException.InvalidInput>("nothing to correct") {
        runBlocking { s.correct(c.dose.doseId, CorrectionInput(null, null, null, "FA5766", null, null, null), "again") }
    }
    val pending = s.pendingCount()
    check("four entries pending", pending == 4uL) { pending.toString() }

    // The batch, applied to the server's redb store through the CLI, then acknowledged.
    val batch = s.pendingBatch(100u)!!
    check("batch holds every entry", batch.entries == 4u && batch.json.contains("\"format\":\"vrs.sync.batch\""))
    val batchFile = File(work, "batch1.json").apply { writeText(batch.json) }
    val reply = vrs(bin, "--store", server, "--json", "sync", "apply", batchFile.path)
    check("server applied all", statuses(reply) == listOf("applied", "applied", "applied", "applied")) { reply }
    val ack = s.acknowledge(batch.batchId, reply)
    check("acknowledged", ack.applied == 4u && ack.stillPending == 0uL) { ack.toString() }
    check("nothing pending", s.pendingBatch(100u) == null && s.today().all { it.synced })
    expectThrows<VrsException.InvalidInput>("reply to another batch") { runBlocking { s.acknowledge("other", reply) } }
    // Sent twice: the server stores nothing new.
    val twice = vrs(bin, "--store", server, "--json", "sync", "apply", batchFile.path)
    check("sent twice: replayed", statuses(twice) == listOf("replayed", "replayed", "replayed", "replayed")) { twice }
    s.close()

    // A crash after producing a batch, before the reply: a child JVM dies with halt().
    val crashDir = File(work, "crashed").path
    val out = File(work, "batch2.json")
    val java = ProcessHandle.current().info().command().orElse("java")
    val child = ProcessBuilder(
        java, "-cp", System.getProperty("java.class.path"), "-Djna.library.path=" + System.getProperty("jna.library.path"),
        "VrsMobileTestKt", "crash-child", crashDir, out.path,
    ).inheritIO().start()
    check("child finished", child.waitFor(120, TimeUnit.SECONDS))
    check("child crashed", child.exitValue() == 3) { "exit ${child.exitValue()}" }
    val lost = out.readText()
    val firstReply = vrs(bin, "--store", server, "--json", "sync", "apply", out.path)
    check("crashed batch applied", statuses(firstReply) == listOf("applied", "applied")) { firstReply }
    // The reply never reached the tablet: after the restart the same entries come again.
    val again = openTabletSession(crashDir, ACCOUNT)
    check("doses survived the crash", again.today().size == 2)
    val resent = again.pendingBatch(100u)!!
    check("produced again, nothing lost", entryIds(resent.json) == entryIds(lost) && entryIds(lost).size == 2) { resent.json }
    val resentFile = File(work, "batch3.json").apply { writeText(resent.json) }
    val secondReply = vrs(bin, "--store", server, "--json", "sync", "apply", resentFile.path)
    check("nothing doubled", statuses(secondReply) == listOf("replayed", "replayed")) { secondReply }
    val ack2 = again.acknowledge(resent.batchId, secondReply)
    check("acknowledged after the crash", ack2.replayed == 2u && ack2.stillPending == 0uL) { ack2.toString() }
    again.close()

    // The server holds each dose exactly once: 3 + 2 unmatched (no residents uploaded there).
    val unmatched = File(work, "unmatched.csv")
    vrs(bin, "--store", server, "export", "unmatched", "--municipality", "131016", "--out", unmatched.path)
    val rows = unmatched.readLines().drop(1).filter { it.isNotBlank() }
    check("server has five doses", rows.size == 5) { rows.joinToString("\n") }
}

fun main(args: Array<String>) {
    if (args.size == 3 && args[0] == "crash-child") {
        crashChild(args[1], args[2])
        return
    }
    require(args.size == 3) { "usage: VrsMobileTestKt <vrs binary> <vaccines.json> <work dir>" }
    val work = File(args[2]).apply { deleteRecursively(); mkdirs() }
    parsers()
    session(args[0], args[1], work)
    println("kotlin: $passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
