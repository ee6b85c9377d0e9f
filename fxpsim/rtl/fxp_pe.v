// fxpsim processing element: one multiply-accumulate per cycle on a BW_ACC-bit accumulator,
// bit-exact with fxpsim's datapath (DESIGN.md "Fixed-point semantics"; de Bruin et al.,
// DSD 2018: a fixed accumulator width that wraps or saturates after EVERY addition).
//
//   load: acc <= bias converted to the accumulator format (shift BIAS_SHIFT = FL_b - FL_acc with
//         ROUND, then saturated to BW_ACC bits); ovf_count, cast_count <= 0
//   mac:  p   = x * w                                  exact, FL_x + FL_w fraction bits
//         p'  = p shifted by PRODUCT_SHIFT = FL_x + FL_w - FL_acc (> 0: rounded with PRODUCT_ROUND,
//               fxpsim's product_rounding, default floor; < 0: exact left shift)
//         PRODUCT_CAST = 1: p' wrapped or saturated to BW_ACC bits (hls4ml casts each product into
//               accum_t) before the addition; 0: p' is added as it is (fxpsim's product "exact")
//         acc <= wrap or saturate(acc + p') to BW_ACC bits (OVERFLOW 0 wrap, 1 saturate);
//         ovf_count += 1 when acc + p' left the BW_ACC range; cast_count += 1 when the cast changed
//         p' (it left the BW_ACC range; fxpsim's cast_overflows, not an addition). Both counters are
//         CNT_W bits and stop at their maximum.
//   y (combinational from acc): shift by SHIFT = FL_acc - FL_y with ROUND, then saturate
//         (OUT_WRAP = 0) or wrap (OUT_WRAP = 1) to W_Y bits, then ReLU when RELU = 1.
//
// Rounding codes (fxpsim.interop.vectors.RTL_ROUNDING): 0 nearest-even, 1 nearest (ties away),
// 2 floor, 3 toward zero. *_SIGNED = 0 makes that operand or the output unsigned (fxpsim's UQ).
// Bits are two's complement, most significant bit first ([W-1:0]). Synchronous, active-high
// rst; load wins over mac. Verilog-2005.
module fxp_pe #(
    parameter integer W_X           = 8,
    parameter integer X_SIGNED      = 1,
    parameter integer W_W           = 8,
    parameter integer W_SIGNED      = 1,
    parameter integer W_B           = 16,
    parameter integer BIAS_SHIFT    = 0,
    parameter integer BW_ACC        = 16,
    parameter integer OVERFLOW      = 0,
    parameter integer PRODUCT_SHIFT = 0,
    parameter integer PRODUCT_ROUND = 2,
    parameter integer PRODUCT_CAST  = 0,
    parameter integer W_Y           = 8,
    parameter integer Y_SIGNED      = 1,
    parameter integer SHIFT         = 0,
    parameter integer ROUND         = 0,
    parameter integer OUT_WRAP      = 0,
    parameter integer RELU          = 0,
    parameter integer CNT_W         = 32
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              load,
    input  wire [W_B-1:0]    bias,
    input  wire              mac,
    input  wire [W_X-1:0]    x,
    input  wire [W_W-1:0]    w,
    output reg  [BW_ACC-1:0] acc,
    output reg  [CNT_W-1:0]  ovf_count,
    output reg  [CNT_W-1:0]  cast_count,
    output wire [W_Y-1:0]    y
);
    // Bits of a W-bit value after fxp_round_shift by S (S > 0: rounded right shift; S <= 0: left).
    function integer width_after(input integer bits, input integer s);
        width_after = (s > 0) ? ((bits - s + 1 > 2) ? bits - s + 1 : 2) : bits - s;
    endfunction

    // ---- exact product: operands as signed values one bit wider when unsigned
    localparam integer WXS = W_X + ((X_SIGNED != 0) ? 0 : 1);
    localparam integer WWS = W_W + ((W_SIGNED != 0) ? 0 : 1);
    localparam integer WP = WXS + WWS;
    wire signed [WXS-1:0] xs;
    wire signed [WWS-1:0] ws;
    generate
        if (X_SIGNED != 0) begin : g_xs
            assign xs = x;
        end else begin : g_xu
            assign xs = {1'b0, x};
        end
        if (W_SIGNED != 0) begin : g_ws
            assign ws = w;
        end else begin : g_wu
            assign ws = {1'b0, w};
        end
    endgenerate
    wire signed [WP-1:0] xw = xs * ws;  // signed operands: extended to WP bits, exact

    // ---- product to FL_acc, optionally cast to BW_ACC
    localparam integer WPS = width_after(WP, PRODUCT_SHIFT);
    wire signed [WPS-1:0] p_shifted;
    fxp_round_shift #(.W_IN(WP), .SHIFT(PRODUCT_SHIFT), .MODE(PRODUCT_ROUND), .W_OUT(WPS))
        u_pshift (.x(xw), .y(p_shifted));
    localparam integer WA = (PRODUCT_CAST != 0) ? BW_ACC : WPS;   // width of the addend
    wire signed [WA-1:0] p_acc;
    wire cast_ovf;
    generate
        if (PRODUCT_CAST != 0) begin : g_cast
            fxp_saturate #(.W_IN(WPS), .W_OUT(BW_ACC), .SIGNED_OUT(1), .WRAP((OVERFLOW == 0) ? 1 : 0))
                u_pcast (.x(p_shifted), .y(p_acc), .ovf(cast_ovf));
        end else begin : g_exact
            assign p_acc = p_shifted;
            assign cast_ovf = 1'b0;
        end
    endgenerate

    // ---- accumulator: add, then wrap or saturate to BW_ACC bits; count overflows
    localparam integer WS = ((WA > BW_ACC) ? WA : BW_ACC) + 1;
    wire signed [WS-1:0] acc_e, p_e;
    fxp_resize #(.W_IN(BW_ACC), .W_OUT(WS)) u_acc_e (.x(acc), .y(acc_e));
    fxp_resize #(.W_IN(WA), .W_OUT(WS)) u_p_e (.x(p_acc), .y(p_e));
    wire signed [WS-1:0] sum = acc_e + p_e;
    wire [BW_ACC-1:0] acc_next;
    wire add_ovf;
    fxp_saturate #(.W_IN(WS), .W_OUT(BW_ACC), .SIGNED_OUT(1), .WRAP((OVERFLOW == 0) ? 1 : 0))
        u_acc (.x(sum), .y(acc_next), .ovf(add_ovf));

    // ---- bias into the accumulator format (saturating)
    localparam integer WBS = width_after(W_B, BIAS_SHIFT);
    wire signed [WBS-1:0] bias_shifted;
    fxp_round_shift #(.W_IN(W_B), .SHIFT(BIAS_SHIFT), .MODE(ROUND), .W_OUT(WBS))
        u_bshift (.x(bias), .y(bias_shifted));
    wire [BW_ACC-1:0] bias_acc;
    wire bias_ovf_unused;
    fxp_saturate #(.W_IN(WBS), .W_OUT(BW_ACC), .SIGNED_OUT(1), .WRAP(0))
        u_bias (.x(bias_shifted), .y(bias_acc), .ovf(bias_ovf_unused));

    wire [CNT_W-1:0] cnt_max = {CNT_W{1'b1}};
    always @(posedge clk) begin
        if (rst || load) begin
            acc <= rst ? {BW_ACC{1'b0}} : bias_acc;
            ovf_count <= {CNT_W{1'b0}};
            cast_count <= {CNT_W{1'b0}};
        end else if (mac) begin
            acc <= acc_next;
            if (add_ovf && ovf_count != cnt_max)
                ovf_count <= ovf_count + 1'b1;
            if (cast_ovf && cast_count != cnt_max)
                cast_count <= cast_count + 1'b1;
        end
    end

    // ---- requantize to the output format, then the activation
    localparam integer WYS = width_after(BW_ACC, SHIFT);
    wire signed [WYS-1:0] acc_shifted;
    fxp_round_shift #(.W_IN(BW_ACC), .SHIFT(SHIFT), .MODE(ROUND), .W_OUT(WYS))
        u_yshift (.x(acc), .y(acc_shifted));
    wire [W_Y-1:0] y_fit;
    wire y_ovf_unused;
    fxp_saturate #(.W_IN(WYS), .W_OUT(W_Y), .SIGNED_OUT(Y_SIGNED), .WRAP(OUT_WRAP))
        u_y (.x(acc_shifted), .y(y_fit), .ovf(y_ovf_unused));
    assign y = (RELU != 0 && Y_SIGNED != 0 && y_fit[W_Y-1]) ? {W_Y{1'b0}} : y_fit;
endmodule
