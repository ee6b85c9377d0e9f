// fxpsim fixed-point shift between formats (DESIGN.md "Fixed-point semantics"):
// y = round(x / 2**SHIFT) with rounding MODE when SHIFT > 0, y = x * 2**-SHIFT (exact) when
// SHIFT <= 0. x is signed two's complement (zero-extend unsigned values by one bit first).
// MODE (fxpsim.interop.vectors.RTL_ROUNDING): 0 nearest-even (AP_RND_CONV), 1 nearest, ties away from
// zero (AP_RND_INF), 2 floor (AP_TRN), 3 toward zero (AP_TRN_ZERO).
// W_OUT must hold the result: max(W_IN - SHIFT + 1, 2) bits when SHIFT > 0, W_IN - SHIFT when
// SHIFT <= 0 (fxp_pe width_after); a wider W_OUT sign-extends. Verilog-2005, combinational.
module fxp_round_shift #(
    parameter integer W_IN  = 16,
    parameter integer SHIFT = 0,
    parameter integer MODE  = 0,
    parameter integer W_OUT = 17
) (
    input  wire signed [W_IN-1:0]  x,
    output wire signed [W_OUT-1:0] y
);
    generate
        if (SHIFT > 0) begin : g_right
            // room for the sign, all SHIFT dropped bits and the rounding increment
            localparam integer WE = ((SHIFT + 1 > W_IN) ? SHIFT + 1 : W_IN) + 1;
            wire signed [WE-1:0] xe;
            fxp_resize #(.W_IN(W_IN), .W_OUT(WE)) u_ext (.x(x), .y(xe));
            wire signed [WE-1:0] q = xe >>> SHIFT;             // floor(x / 2**SHIFT)
            wire [WE-1:0] one = 1;
            wire [WE-1:0] half = one << (SHIFT - 1);           // weight of the first dropped bit
            wire round_bit = |(xe & half);
            wire sticky = |(xe & (half - one));                // any dropped bit below it
            wire neg = xe[WE-1];
            reg up;
            always @* begin
                case (MODE)
                    0: up = round_bit & (sticky | q[0]);       // ties to even
                    1: up = round_bit & (sticky | ~neg);       // ties away from zero
                    3: up = neg & (round_bit | sticky);        // toward zero
                    default: up = 1'b0;                        // floor
                endcase
            end
            wire signed [WE-1:0] r = q + $signed({{(WE-1){1'b0}}, up});
            fxp_resize #(.W_IN(WE), .W_OUT(W_OUT)) u_out (.x(r), .y(y));
        end else begin : g_left
            localparam integer WE = W_IN - SHIFT;
            wire signed [WE-1:0] xe;
            fxp_resize #(.W_IN(W_IN), .W_OUT(WE)) u_ext (.x(x), .y(xe));
            wire signed [WE-1:0] r = xe <<< (-SHIFT);
            fxp_resize #(.W_IN(WE), .W_OUT(W_OUT)) u_out (.x(r), .y(y));
        end
    endgenerate
endmodule
