/* batch-1 condensed GEMV probes. usage: ./b1 in out sparsity [ncalls] */
#include "common.h"
typedef struct { int W,B,ng; int *gw,*ge; uint16_t *woff; uint8_t *wcnt; float *v; uint8_t *ix; long nent,nwin; } Pk;
/* align=1: aligned blocks of B, run until empty. align=0: window starts at min next nnz, leave when active lanes < T */
static Pk pack(int in,int out,int k,const int*idx,const float*val,int W,int B,int align,int T){
  Pk p={W,B,out/W};int ng=p.ng; long cap=(long)out*k+ (long)ng*in; 
  p.gw=malloc((ng+1)*sizeof(int));p.ge=malloc((ng+1)*sizeof(int));
  p.woff=malloc(cap*2);p.wcnt=malloc(cap);p.v=aligned_alloc(64,((cap*W*4+63)/64)*64);p.ix=malloc(cap*W);
  long ne=0,nw=0; int nx[16];
  for(int g=0;g<ng;g++){p.gw[g]=nw;p.ge[g]=ne;for(int l=0;l<W;l++)nx[l]=0;
    for(;;){int w=in;for(int l=0;l<W;l++)if(nx[l]<k){int c=idx[(long)(g*W+l)*k+nx[l]];if(c<w)w=c;}
      if(w==in)break; if(align)w=w/B*B; else if(w+B>in)w=in-B;
      int cnt=0;
      for(;;){int act=0;for(int l=0;l<W;l++)if(nx[l]<k&&idx[(long)(g*W+l)*k+nx[l]]<w+B)act++;
        if(act==0||(cnt>0&&act<T))break;
        for(int l=0;l<W;l++){long r=(long)(g*W+l)*k;if(nx[l]<k&&idx[r+nx[l]]<w+B){p.v[ne*W+l]=val[r+nx[l]];p.ix[ne*W+l]=idx[r+nx[l]]-w;nx[l]++;}else{p.v[ne*W+l]=0;p.ix[ne*W+l]=0;}}
        ne++;cnt++; if(cnt==255)break;}
      p.woff[nw]=w;p.wcnt[nw]=cnt;nw++;}
  }
  p.gw[ng]=nw;p.ge[ng]=ne;p.nent=ne;p.nwin=nw;return p;}

#define GROUPLOOP(W_, LOADX, GETX, VT, ZERO, FMA, ADD, LD, ST) \
  _Pragma("omp parallel num_threads(2)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); \
  int g0=p->ng*t/nt,g1=p->ng*(t+1)/nt; \
  for(int g=g0;g<g1;g++){ VT a0=ZERO,a1=ZERO,a2=ZERO,a3=ZERO; const float*vp=p->v+(long)p->ge[g]*W_; const uint8_t*ip=p->ix+(long)p->ge[g]*W_; \
    for(int wi=p->gw[g];wi<p->gw[g+1];wi++){ const float*xb=x+p->woff[wi]; int s=p->wcnt[wi]; LOADX; \
      while(s>=4){ a0=FMA(GETX(ip),LD(vp),a0);a1=FMA(GETX(ip+W_),LD(vp+W_),a1);a2=FMA(GETX(ip+2*W_),LD(vp+2*W_),a2);a3=FMA(GETX(ip+3*W_),LD(vp+3*W_),a3);ip+=4*W_;vp+=4*W_;s-=4;} \
      if(s>0){a0=FMA(GETX(ip),LD(vp),a0);ip+=W_;vp+=W_; if(s>1){a1=FMA(GETX(ip),LD(vp),a1);ip+=W_;vp+=W_; if(s>2){a2=FMA(GETX(ip),LD(vp),a2);ip+=W_;vp+=W_;}}} } \
    ST(y+g*W_, ADD(ADD(a0,a1),ADD(ADD(a2,a3),LD(bias+g*W_)))); } }

static void k_z32(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m512 x0=_mm512_loadu_ps(xb),x1=_mm512_loadu_ps(xb+16)
#define GX(q) _mm512_permutex2var_ps(x0,_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q))),x1)
 GROUPLOOP(16,LX,GX,__m512,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_add_ps,_mm512_load_ps,_mm512_storeu_ps)
#undef LX
#undef GX
}
static void k_z16(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m512 x0=_mm512_loadu_ps(xb)
#define GX(q) _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q))),x0)
 GROUPLOOP(16,LX,GX,__m512,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_add_ps,_mm512_load_ps,_mm512_storeu_ps)
#undef LX
#undef GX
}
static void k_y16(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m256 x0=_mm256_loadu_ps(xb),x1=_mm256_loadu_ps(xb+8)
#define GX(q) _mm256_permutex2var_ps(x0,_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q))),x1)
 GROUPLOOP(8,LX,GX,__m256,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_add_ps,_mm256_load_ps,_mm256_storeu_ps)
#undef LX
#undef GX
}
static void k_y8(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m256 x0=_mm256_loadu_ps(xb)
#define GX(q) _mm256_permutevar8x32_ps(x0,_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q))))
 GROUPLOOP(8,LX,GX,__m256,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_add_ps,_mm256_load_ps,_mm256_storeu_ps)
#undef LX
#undef GX
}
/* scalar rows */
static inline void rows(int j0,int j1,int k,const float*v,const uint16_t*ix,const float*x,const float*bias,float*y){
  for(int j=j0;j<j1;j++){const float*vv=v+(long)j*k;const uint16_t*ii=ix+(long)j*k;float s0=0,s1=0,s2=0,s3=0;int t=0;
    for(;t+4<=k;t+=4){s0+=vv[t]*x[ii[t]];s1+=vv[t+1]*x[ii[t+1]];s2+=vv[t+2]*x[ii[t+2]];s3+=vv[t+3]*x[ii[t+3]];}
    for(;t<k;t++)s0+=vv[t]*x[ii[t]]; y[j]=(s0+s1)+(s2+s3)+bias[j];}}
static void k_scalar(int out,int k,const float*v,const uint16_t*ix,const float*x,const float*bias,float*y){
#pragma omp parallel num_threads(2)
 {int t=omp_get_thread_num(),nt=omp_get_num_threads();rows(out*t/nt,out*(t+1)/nt,k,v,ix,x,bias,y);}}
/* dense gemv, 4 rows share x loads */
static void k_dense(int in,int out,const float*Wm,const float*x,const float*bias,float*y){
#pragma omp parallel num_threads(2)
 {int t=omp_get_thread_num(),nt=omp_get_num_threads();int j0=out*t/nt/4*4,j1=out*(t+1)/nt/4*4;
  for(int j=j0;j<j1;j+=4){const float*r0=Wm+(long)j*in,*r1=r0+in,*r2=r1+in,*r3=r2+in;__m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
   for(int i=0;i<in;i+=16){__m512 xv=_mm512_load_ps(x+i);a0=_mm512_fmadd_ps(_mm512_load_ps(r0+i),xv,a0);a1=_mm512_fmadd_ps(_mm512_load_ps(r1+i),xv,a1);
     a2=_mm512_fmadd_ps(_mm512_load_ps(r2+i),xv,a2);a3=_mm512_fmadd_ps(_mm512_load_ps(r3+i),xv,a3);}
   y[j]=_mm512_reduce_add_ps(a0)+bias[j];y[j+1]=_mm512_reduce_add_ps(a1)+bias[j+1];y[j+2]=_mm512_reduce_add_ps(a2)+bias[j+2];y[j+3]=_mm512_reduce_add_ps(a3)+bias[j+3];}}}
static volatile int sink;
int main(int argc,char**argv){
  int in=atoi(argv[1]),out=atoi(argv[2]);double sp=atof(argv[3]);int nc=argc>4?atoi(argv[4]):2000;int reps=7;
  int k=(int)lround((1-sp)*in);double tmin,tmed;
  int*idx=malloc((long)out*k*sizeof(int));make_mask(in,out,k,idx);
  float*val=malloc((long)out*k*4),*x=aligned_alloc(64,in*4),*bias=aligned_alloc(64,out*4),*y=aligned_alloc(64,out*4);double*yr=malloc(out*8);
  for(long i=0;i<(long)out*k;i++)val[i]=frnd();for(int i=0;i<in;i++)x[i]=frnd();for(int i=0;i<out;i++)bias[i]=frnd();
  for(int j=0;j<out;j++){double s=bias[j];for(int t=0;t<k;t++)s+=(double)val[(long)j*k+t]*x[idx[(long)j*k+t]];yr[j]=s;}
  uint16_t*ix16=malloc((long)out*k*2);for(long i=0;i<(long)out*k;i++)ix16[i]=idx[i];
  float*Wm=aligned_alloc(64,(long)in*out*4);memset(Wm,0,(long)in*out*4);for(int j=0;j<out;j++)for(int t=0;t<k;t++)Wm[(long)j*in+idx[(long)j*k+t]]=val[(long)j*k+t];
  printf("== %d->%d sparsity %.2f k=%d nnz=%ld threads=2\n",in,out,sp,k,(long)out*k);loadavg("before");
#define CHK(name) do{double e=0;for(int j=0;j<out;j++){double d=fabs(y[j]-yr[j]);if(d>e)e=d;} if(e>1e-3)printf("  !! %s maxerr %g\n",name,e);}while(0)
  TIME("empty omp parallel region",nc*5,reps,{_Pragma("omp parallel num_threads(2)") {sink=omp_get_thread_num();}});
  TIME("serial scalar rows (1 thread, no omp)",nc/4+1,reps,rows(0,out,k,val,ix16,x,bias,y)); CHK("serial");
  TIME("scalar rows 4acc, int16 idx (2 thr)",nc,reps,k_scalar(out,k,val,ix16,x,bias,y)); CHK("scalar");
  printf("   scalar packed bytes %.2f MB\n",(double)out*k*6/1e6);
  TIME("dense AVX-512 GEMV (2 thr)",nc/4+1,reps,k_dense(in,out,Wm,x,bias,y)); CHK("dense");
  printf("   dense bytes %.2f MB -> %.1f GB/s at min\n",(double)in*out*4/1e6,(double)in*out*4/1e3/tmin);
  struct {const char*n;int W,B,al,T;void(*f)(const Pk*,const float*,const float*,float*);} V[]={
    {"zmm vpermt2ps B32 aligned",16,32,1,1,k_z32},{"zmm vpermps B16 aligned",16,16,1,1,k_z16},
    {"ymm vpermt2ps B16 aligned",8,16,1,1,k_y16},{"ymm vpermps B8 aligned",8,8,1,1,k_y8},
    {"zmm vpermt2ps B32 slide T=12",16,32,0,12,k_z32},{"zmm vpermt2ps B32 slide T=10",16,32,0,10,k_z32},{"zmm vpermt2ps B32 slide T=8",16,32,0,8,k_z32},
    {"ymm vpermt2ps B16 slide T=6",8,16,0,6,k_y16},{"ymm vpermt2ps B16 slide T=4",8,16,0,4,k_y16}};
  for(unsigned vi=0;vi<sizeof V/sizeof V[0];vi++){Pk p=pack(in,out,k,idx,val,V[vi].W,V[vi].B,V[vi].al,V[vi].T);
    TIME(V[vi].n,nc,reps,V[vi].f(&p,x,bias,y)); CHK(V[vi].n);
    double bytes=p.nent*(double)p.W*5+p.nwin*3;
    printf("   entries %ld windows %ld lane util %.1f%% packed %.2f MB  eff %.1f GB/s  %.1f useful GFLOP/s\n",p.nent,p.nwin,100.0*out*k/(p.nent*(double)p.W),bytes/1e6,bytes/1e3/tmin,2.0*out*k/1e3/tmin);
    free(p.gw);free(p.ge);free(p.woff);free(p.wcnt);free(p.v);free(p.ix);}
  loadavg("after");return 0;}
